"""Consultations: requests, appointments, invitations, attachments, opinions, timeline.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rooms.records.schema import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    ref_table = target.split(".")[0]
    return sa.ForeignKeyConstraint([column], [target], name=f"fk_{table}_{column}_{ref_table}")


def upgrade() -> None:
    op.create_table(
        "consultations",
        sa.Column("id", sa.String(64)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("site_id", sa.String(32), nullable=False),
        sa.Column("department_id", sa.String(32), nullable=True),
        sa.Column("expert_site_id", sa.String(32), nullable=True),
        sa.Column("created_by", sa.String(32), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("patient_name_sealed", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_consultations"),
        _fk("consultations", "site_id", "sites.id"),
        _fk("consultations", "department_id", "departments.id"),
        _fk("consultations", "expert_site_id", "sites.id"),
    )
    op.create_index("ix_consultations_site_id", "consultations", ["site_id"])
    op.create_index("ix_consultations_expert_site_id", "consultations", ["expert_site_id"])
    op.create_table(
        "consultation_staff",
        sa.Column("consultation_id", sa.String(64), nullable=False),
        sa.Column("staff_id", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("added_by", sa.String(32), nullable=False),
        sa.Column("added_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("consultation_id", "staff_id", name="pk_consultation_staff"),
        _fk("consultation_staff", "consultation_id", "consultations.id"),
        _fk("consultation_staff", "staff_id", "staff.id"),
    )
    op.create_index("ix_consultation_staff_staff_id", "consultation_staff", ["staff_id"])
    op.create_table(
        "consultation_requests",
        sa.Column("id", sa.String(32)),
        sa.Column("consultation_id", sa.String(64), nullable=False),
        sa.Column("department_id", sa.String(32), nullable=False),
        sa.Column("requested_by", sa.String(32), nullable=False),
        sa.Column("urgency", sa.String(16), nullable=False),
        sa.Column("urgency_rank", sa.Integer, nullable=False),
        sa.Column("reason_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("preferred_times", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("proposed_start", UtcDateTime(), nullable=True),
        sa.Column("proposed_minutes", sa.Integer, nullable=True),
        sa.Column("proposed_by", sa.String(32), nullable=True),
        sa.Column("decided_by", sa.String(32), nullable=True),
        sa.Column("decided_at", UtcDateTime(), nullable=True),
        sa.Column("decline_reason_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_consultation_requests"),
        _fk("consultation_requests", "consultation_id", "consultations.id"),
        _fk("consultation_requests", "department_id", "departments.id"),
        sa.UniqueConstraint("consultation_id", name="uq_consultation_requests_consultation_id"),
    )
    op.create_index(
        "ix_consultation_requests_department_id",
        "consultation_requests",
        ["department_id", "status"],
    )
    op.create_table(
        "appointments",
        sa.Column("id", sa.String(32)),
        sa.Column("consultation_id", sa.String(64), nullable=False),
        sa.Column("starts_at", UtcDateTime(), nullable=False),
        sa.Column("minutes", sa.Integer, nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("updated_by", sa.String(32), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_appointments"),
        _fk("appointments", "consultation_id", "consultations.id"),
        sa.UniqueConstraint("consultation_id", name="uq_appointments_consultation_id"),
    )
    op.create_table(
        "invitations",
        sa.Column("id", sa.String(32)),
        sa.Column("consultation_id", sa.String(64), nullable=False),
        sa.Column("jti", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("identity", sa.String(256), nullable=False),
        sa.Column("staff_id", sa.String(32), nullable=True),
        sa.Column("name_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("token_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("valid_from", UtcDateTime(), nullable=False),
        sa.Column("valid_until", UtcDateTime(), nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("created_by", sa.String(32), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_by", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_invitations"),
        _fk("invitations", "consultation_id", "consultations.id"),
        _fk("invitations", "staff_id", "staff.id"),
        sa.UniqueConstraint("jti", name="uq_invitations_jti"),
    )
    op.create_index("ix_invitations_consultation_id", "invitations", ["consultation_id"])
    op.create_table(
        "attachments",
        sa.Column("id", sa.String(32)),
        sa.Column("consultation_id", sa.String(64), nullable=False),
        sa.Column("media_type", sa.String(32), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("name_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("uploaded_by", sa.String(32), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_attachments"),
        _fk("attachments", "consultation_id", "consultations.id"),
    )
    op.create_index("ix_attachments_consultation_id", "attachments", ["consultation_id"])
    op.create_table(
        "opinions",
        sa.Column("id", sa.String(32)),
        sa.Column("consultation_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("supersedes", sa.String(32), nullable=True),
        sa.Column("author_id", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("signed_at", UtcDateTime(), nullable=False),
        sa.Column("body_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(64), nullable=False),
        sa.Column("acknowledged_by", sa.String(32), nullable=True),
        sa.Column("acknowledged_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_opinions"),
        _fk("opinions", "consultation_id", "consultations.id"),
        _fk("opinions", "author_id", "staff.id"),
        sa.UniqueConstraint("consultation_id", "version", name="uq_opinions_version"),
    )
    op.create_table(
        "consultation_events",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("consultation_id", sa.String(64), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("by", sa.String(32), nullable=True),
        sa.Column("ref", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_consultation_events"),
        _fk("consultation_events", "consultation_id", "consultations.id"),
    )
    op.create_index(
        "ix_consultation_events_consultation_id", "consultation_events", ["consultation_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_consultation_events_consultation_id", "consultation_events")
    op.drop_table("consultation_events")
    op.drop_table("opinions")
    op.drop_index("ix_attachments_consultation_id", "attachments")
    op.drop_table("attachments")
    op.drop_index("ix_invitations_consultation_id", "invitations")
    op.drop_table("invitations")
    op.drop_table("appointments")
    op.drop_index("ix_consultation_requests_department_id", "consultation_requests")
    op.drop_table("consultation_requests")
    op.drop_index("ix_consultation_staff_staff_id", "consultation_staff")
    op.drop_table("consultation_staff")
    op.drop_index("ix_consultations_expert_site_id", "consultations")
    op.drop_index("ix_consultations_site_id", "consultations")
    op.drop_table("consultations")
