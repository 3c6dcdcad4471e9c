"""Revocations of join tokens: a consultation, a person in it, or one token.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rooms.records.schema import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revocations",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("consultation_id", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("revoked_by", sa.String(256), nullable=True),
        sa.Column("revoked_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_revocations"),
        sa.UniqueConstraint("consultation_id", "scope", "subject", name="uq_revocations_target"),
    )
    op.create_index("ix_revocations_consultation_id", "revocations", ["consultation_id"])
    op.create_index("ix_revocations_revoked_at", "revocations", ["revoked_at"])


def downgrade() -> None:
    op.drop_index("ix_revocations_revoked_at", "revocations")
    op.drop_index("ix_revocations_consultation_id", "revocations")
    op.drop_table("revocations")
