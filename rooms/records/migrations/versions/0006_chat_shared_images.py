"""A call's chat and the images shown in it, kept with the consultation.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rooms.records.schema import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chat_messages",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("consultation_id", sa.String(64), nullable=False),
        sa.Column("participant_id", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("body_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_chat_messages"),
        sa.ForeignKeyConstraint(
            ["consultation_id"],
            ["consultations.id"],
            name="fk_chat_messages_consultation_id_consultations",
        ),
    )
    op.create_index(
        "ix_chat_messages_consultation_id", "chat_messages", ["consultation_id", "created_at"]
    )
    op.create_table(
        "shared_images",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("consultation_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("media_type", sa.String(32), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("renditions", sa.Text(), nullable=False),
        sa.Column("info_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("shared_by", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_shared_images"),
        sa.ForeignKeyConstraint(
            ["consultation_id"],
            ["consultations.id"],
            name="fk_shared_images_consultation_id_consultations",
        ),
    )
    op.create_index("ix_shared_images_consultation_id", "shared_images", ["consultation_id"])


def downgrade() -> None:
    op.drop_index("ix_shared_images_consultation_id", "shared_images")
    op.drop_table("shared_images")
    op.drop_index("ix_chat_messages_consultation_id", "chat_messages")
    op.drop_table("chat_messages")
