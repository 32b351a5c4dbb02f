"""Render jobs (issue #13): a decision's notices are rendered by the worker after the answer, from
the letter stored with the job in the answering transaction (`outbox.payload`).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("payload", sa.JSON))


def downgrade() -> None:
    op.drop_column("outbox", "payload")
