"""Call quality: the Workers' per-participant samples, kept with the consultation.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rooms.records.schema import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "call_quality",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("consultation_id", sa.String(64), nullable=False),
        sa.Column("participant_id", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("interval_s", sa.Float, nullable=False),
        sa.Column("loss_in", sa.Float, nullable=True),
        sa.Column("loss_out", sa.Float, nullable=True),
        sa.Column("rtt_ms", sa.Float, nullable=True),
        sa.Column("fps_in", sa.Float, nullable=True),
        sa.Column("fps_out", sa.Float, nullable=True),
        sa.Column("kbps_in", sa.Float, nullable=True),
        sa.Column("kbps_out", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_call_quality"),
        sa.ForeignKeyConstraint(
            ["consultation_id"],
            ["consultations.id"],
            name="fk_call_quality_consultation_id_consultations",
        ),
    )
    op.create_index("ix_call_quality_consultation_id", "call_quality", ["consultation_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_call_quality_consultation_id", "call_quality")
    op.drop_table("call_quality")
