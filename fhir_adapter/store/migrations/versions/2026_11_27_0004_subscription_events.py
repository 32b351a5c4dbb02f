"""Subscription events (numbered notifications) and the outbox columns that point at them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from fhir_adapter.store.tables import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscription_events",
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("event_number", sa.Integer, nullable=False),
        sa.Column("focus", sa.String(140), nullable=False),
        sa.Column("occurred_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", "event_number", name="pk_subscription_events"),
    )
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("subscription_id", sa.String(64)))
        batch.add_column(sa.Column("event_number", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("event_number")
        batch.drop_column("subscription_id")
    op.drop_table("subscription_events")
