"""Transactional outbox for deliveries (consultation reports to the PCP, member copies).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from fhir_adapter.store.tables import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("communication_id", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("next_attempt_at", UtcDateTime, nullable=False),
        sa.Column("leased_until", UtcDateTime),
        sa.Column("delivered_at", UtcDateTime),
        sa.Column("last_error", sa.String(200)),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_next", "outbox", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("outbox")
