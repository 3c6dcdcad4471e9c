"""Nursing-home terminals: the terminals, pairings in progress, wrong codes, calls.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rooms.records.schema import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "terminals",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("site_id", sa.String(32), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("credential_hash", sa.String(64), nullable=True),
        sa.Column("auto_answer_s", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(32), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_by", sa.String(32), nullable=True),
        sa.Column("last_seen_at", UtcDateTime(), nullable=True),
        sa.Column("disconnected_at", UtcDateTime(), nullable=True),
        sa.Column("last_called_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_terminals"),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name="fk_terminals_site_id_sites"),
        sa.UniqueConstraint("credential_hash", name="uq_terminals_credential_hash"),
    )
    op.create_index("ix_terminals_site_id", "terminals", ["site_id"])
    op.create_table(
        "terminal_pairings",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("ticket_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("terminal_id", sa.String(32), nullable=True),
        sa.Column("collected_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_terminal_pairings"),
        sa.UniqueConstraint("ticket_hash", name="uq_terminal_pairings_ticket_hash"),
    )
    op.create_index("ix_terminal_pairings_code_hash", "terminal_pairings", ["code_hash"])
    op.create_table(
        "terminal_pairing_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("site_id", sa.String(32), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_terminal_pairing_failures"),
    )
    op.create_index(
        "ix_terminal_pairing_failures_site_id", "terminal_pairing_failures", ["site_id", "at"]
    )
    op.create_table(
        "terminal_calls",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("terminal_id", sa.String(32), nullable=False),
        sa.Column("consultation_id", sa.String(64), nullable=False),
        sa.Column("jti", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(32), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_terminal_calls"),
        sa.ForeignKeyConstraint(
            ["terminal_id"], ["terminals.id"], name="fk_terminal_calls_terminal_id_terminals"
        ),
        sa.ForeignKeyConstraint(
            ["consultation_id"],
            ["consultations.id"],
            name="fk_terminal_calls_consultation_id_consultations",
        ),
    )
    op.create_index("ix_terminal_calls_terminal_id", "terminal_calls", ["terminal_id"])


def downgrade() -> None:
    op.drop_index("ix_terminal_calls_terminal_id", "terminal_calls")
    op.drop_table("terminal_calls")
    op.drop_index("ix_terminal_pairing_failures_site_id", "terminal_pairing_failures")
    op.drop_table("terminal_pairing_failures")
    op.drop_index("ix_terminal_pairings_code_hash", "terminal_pairings")
    op.drop_table("terminal_pairings")
    op.drop_index("ix_terminals_site_id", "terminals")
    op.drop_table("terminals")
