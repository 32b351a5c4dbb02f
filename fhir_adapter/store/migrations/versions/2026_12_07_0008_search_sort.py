"""Search at scale (issue #13), `_sort` on `_lastUpdated`: the sort's index covers the page's keys.

`ix_resources_type_updated_id` (resource_type, last_updated, id) INCLUDE (pk) replaces
`ix_resources_type_updated` (resource_type, last_updated): a `_sort=-_lastUpdated` page walks it
backwards (or forwards) in exactly the sort's order, ties in id order, cursors as a row
comparison on it, and reads the keys it passes over from the index alone, fetching only the
page's rows. No data changes: one index build (17 s for 3,000,000 resources on a loaded
two-core machine).

On PostgreSQL, two planner settings as well. Most-common-value statistics on (param, code, system)
of search_token: the default `_total=estimate` answers the planner's row estimate of a code, and
without them a code that two parameters share (a status `completed` and a business status
`completed`) was estimated at up to twice its rows. And no parallel workers for scans of
resources: a page stops after `_count + 1` matches, and parallel workers, each started for the
page and each reading ahead on its own, made a sorted page two to three times slower on a loaded
machine (docs/performance-search-scale.md); `_total=accurate` counts run serial too.

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
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE STATISTICS IF NOT EXISTS st_search_token_code_mcv (mcv)"
            " ON param, code, system FROM search_token"
        )
        op.execute("ANALYZE search_token")  # builds them (a sample: seconds at any size)
        op.execute("ALTER TABLE resources SET (parallel_workers = 0)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE resources RESET (parallel_workers)")
        op.execute("DROP STATISTICS IF EXISTS st_search_token_code_mcv")
    op.create_index("ix_resources_type_updated", "resources", ["resource_type", "last_updated"])
    op.drop_index("ix_resources_type_updated_id", "resources")
