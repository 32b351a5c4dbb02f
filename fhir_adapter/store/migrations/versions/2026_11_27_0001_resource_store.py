"""Resource store: current versions, version history, search index tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from fhir_adapter.store.tables import PrimaryKey, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("last_updated", UtcDateTime, nullable=False),
        sa.Column("content", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("pk", name="pk_resources"),
        sa.UniqueConstraint("resource_type", "id", name="uq_resources_type_id"),
    )
    op.create_index("ix_resources_type_updated", "resources", ["resource_type", "last_updated"])
    op.create_table(
        "resource_versions",
        sa.Column("resource_pk", PrimaryKey, nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("last_updated", UtcDateTime, nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("content", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("resource_pk", "version_id", name="pk_resource_versions"),
        sa.ForeignKeyConstraint(
            ["resource_pk"], ["resources.pk"], name="fk_resource_versions_resource_pk_resources"
        ),
    )
    _index_table(
        "search_token",
        [
            sa.Column("system", sa.Text),
            sa.Column("code", sa.Text, nullable=False),
        ],
        {"ix_search_token_lookup": ["param", "code", "system"]},
    )
    _index_table(
        "search_reference",
        [
            sa.Column("target_type", sa.String(64)),
            sa.Column("target_id", sa.String(64)),
            sa.Column("url", sa.Text),
        ],
        {
            "ix_search_reference_lookup": ["param", "target_id", "target_type"],
            "ix_search_reference_url": ["param", "url"],
        },
    )
    _index_table(
        "search_date",
        [
            sa.Column("low", UtcDateTime, nullable=False),
            sa.Column("high", UtcDateTime, nullable=False),
        ],
        {"ix_search_date_lookup": ["param", "low", "high"]},
    )
    _index_table(
        "search_string",
        [sa.Column("value", sa.Text, nullable=False)],
        {"ix_search_string_lookup": ["param", "value"]},
    )


def _index_table(name: str, columns: list[sa.Column[Any]], indexes: dict[str, list[str]]) -> None:
    op.create_table(
        name,
        sa.Column("resource_pk", PrimaryKey, nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        *columns,
        sa.ForeignKeyConstraint(
            ["resource_pk"], ["resources.pk"], name=f"fk_{name}_resource_pk_resources"
        ),
    )
    for index_name, index_columns in indexes.items():
        op.create_index(index_name, name, index_columns)
    op.create_index(f"ix_{name}_resource", name, ["resource_pk"])


def downgrade() -> None:
    for name in ("search_string", "search_date", "search_reference", "search_token"):
        op.drop_table(name)
    op.drop_table("resource_versions")
    op.drop_table("resources")
