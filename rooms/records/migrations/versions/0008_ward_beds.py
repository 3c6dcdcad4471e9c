"""A ward round's agenda of beds and their summaries, kept with the consultation.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rooms.records.schema import UtcDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ward_beds",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("consultation_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("body_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("summary_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ward_beds"),
        sa.ForeignKeyConstraint(
            ["consultation_id"],
            ["consultations.id"],
            name="fk_ward_beds_consultation_id_consultations",
        ),
    )
    op.create_index("ix_ward_beds_consultation_id", "ward_beds", ["consultation_id", "position"])


def downgrade() -> None:
    op.drop_index("ix_ward_beds_consultation_id", "ward_beds")
    op.drop_table("ward_beds")
