"""Search at scale (issue #13): indexes that let a search page and its count be read from indexes.

`ix_resources_type_pk` gives a type's keys in page (key) order; `ix_search_token_code_pk` gives
one token code's resources in the same order, so a token search pages and counts with a merge of
two index-only scans instead of reading every matching row (the system is included on
PostgreSQL, so `system|code` searches are served too); extended statistics tell the planner that a
code belongs to one parameter.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_resources_type_pk", "resources", ["resource_type", "pk"])
    op.create_index(
        "ix_search_token_code_pk",
        "search_token",
        ["param", "code", "resource_pk"],
        postgresql_include=["system"],
    )
    if op.get_bind().dialect.name == "postgresql":
        # A code belongs to one parameter (and mostly one system): without this the planner
        # multiplies their selectivities and expects a few matches where there are thousands.
        op.execute(
            "CREATE STATISTICS IF NOT EXISTS st_search_token_code (dependencies)"
            " ON param, code, system FROM search_token"
        )


def downgrade() -> None:
    op.execute("DROP STATISTICS IF EXISTS st_search_token_code")
    op.drop_index("ix_search_token_code_pk", "search_token")
    op.drop_index("ix_resources_type_pk", "resources")
