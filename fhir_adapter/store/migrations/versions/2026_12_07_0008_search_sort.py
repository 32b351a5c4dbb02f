"""Search at scale (issue #13), `_sort` on `_lastUpdated`: the sort's index covers the page's keys.

`ix_resources_type_updated_id` (resource_type, last_updated, id) INCLUDE (pk) replaces
`ix_resources_type_updated` (resource_type, last_updated): a `_sort=-_lastUpdated` page walks it
backwards (or forwards) in exactly the sort's order, ties in id order, cursors as a row
comparison on it, and reads the keys it passes over from the index alone, fetching only the
page's rows. No data changes: one index build (about 10 s for 3,000,000 resources).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_resources_type_updated_id",
        "resources",
        ["resource_type", "last_updated", "id"],
        postgresql_include=["pk"],
    )
    op.drop_index("ix_resources_type_updated", "resources")


def downgrade() -> None:
    op.create_index("ix_resources_type_updated", "resources", ["resource_type", "last_updated"])
    op.drop_index("ix_resources_type_updated_id", "resources")
