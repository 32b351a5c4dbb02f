"""The built-in authorization server: signing keys, registered clients, used client assertions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from fhir_adapter.store.tables import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("private_pem", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("kid", name="pk_auth_keys"),
    )
    op.create_table(
        "auth_clients",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("jwks", sa.JSON, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("patient", sa.String(64)),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("client_id", name="pk_auth_clients"),
    )
    op.create_table(
        "auth_used_assertions",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("jti", sa.String(255), nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name="pk_auth_used_assertions"),
    )
    op.create_index("ix_auth_used_assertions_expires_at", "auth_used_assertions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_auth_used_assertions_expires_at", "auth_used_assertions")
    op.drop_table("auth_used_assertions")
    op.drop_table("auth_clients")
    op.drop_table("auth_keys")
