"""Search index rows without foreign keys (issues #13 and #18).

A foreign key on an index table costs a lookup and a `FOR KEY SHARE` lock of the resource row for
every index row written: on PostgreSQL about half of the server's CPU for storing an AuditEvent
(docs/performance.md, "Index rows without foreign keys"). The rows are derived data that only the
store writes, in the transaction that writes their resource, with the key that insert returned;
resources are never deleted. The history (`resource_versions`) keeps its key.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

INDEX_TABLES = ("search_token", "search_reference", "search_date", "search_string")


def upgrade() -> None:
    for table in INDEX_TABLES:  # on SQLite, batch mode copies the table without the key
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_resource_pk_resources", type_="foreignkey")


def downgrade() -> None:
    for table in INDEX_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(
                f"fk_{table}_resource_pk_resources", "resources", ["resource_pk"], ["pk"]
            )
