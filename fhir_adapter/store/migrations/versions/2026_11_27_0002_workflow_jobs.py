"""Workflow jobs: one row per second-opinion Task, claimed by workers through the database.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from fhir_adapter.store.tables import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflow_jobs",
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("due_at", UtcDateTime, nullable=False),
        sa.Column("next_attempt_at", UtcDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("leased_until", UtcDateTime),
        sa.PrimaryKeyConstraint("task_id", name="pk_workflow_jobs"),
    )
    op.create_index("ix_workflow_jobs_next", "workflow_jobs", ["state", "next_attempt_at"])
    op.create_index("ix_workflow_jobs_due", "workflow_jobs", ["state", "due_at"])


def downgrade() -> None:
    op.drop_table("workflow_jobs")
