"""The front desk: sites, departments, partnerships, staff, login back-off, API tokens.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rooms.records.schema import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("id", sa.String(32)),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sites"),
    )
    op.create_table(
        "departments",
        sa.Column("id", sa.String(32)),
        sa.Column("site_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_departments"),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name="fk_departments_site_id_sites"
        ),
        sa.UniqueConstraint("site_id", "name", name="uq_departments_site_name"),
    )
    op.create_index("ix_departments_site_id", "departments", ["site_id"])
    op.create_table(
        "partnerships",
        sa.Column("id", sa.String(32)),
        sa.Column("requester_site_id", sa.String(32), nullable=False),
        sa.Column("department_id", sa.String(32), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(32), nullable=True),
        sa.Column("ended_at", UtcDateTime(), nullable=True),
        sa.Column("ended_by", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_partnerships"),
        sa.ForeignKeyConstraint(
            ["requester_site_id"], ["sites.id"], name="fk_partnerships_requester_site_id_sites"
        ),
        sa.ForeignKeyConstraint(
            ["department_id"], ["departments.id"], name="fk_partnerships_department_id_departments"
        ),
        sa.UniqueConstraint("requester_site_id", "department_id", name="uq_partnerships_pair"),
    )
    op.create_index("ix_partnerships_department_id", "partnerships", ["department_id"])
    op.create_table(
        "staff",
        sa.Column("id", sa.String(32)),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("site_id", sa.String(32), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("platform_admin", sa.Boolean(), nullable=False),
        sa.Column("disabled_at", UtcDateTime(), nullable=True),
        sa.Column("session_generation", sa.Integer, nullable=False),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("private_key_sealed", sa.LargeBinary(128), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("password_changed_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_staff"),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name="fk_staff_site_id_sites"),
        sa.UniqueConstraint("username", name="uq_staff_username"),
    )
    op.create_index("ix_staff_site_id", "staff", ["site_id"])
    op.create_table(
        "login_failures",
        sa.Column("key", sa.String(80)),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_failure_at", UtcDateTime(), nullable=False),
        sa.Column("locked_until", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_login_failures"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32)),
        sa.Column("site_id", sa.String(32), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(32), nullable=True),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_by", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name="fk_api_tokens_site_id_sites"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_index("ix_api_tokens_site_id", "api_tokens", ["site_id"])


def downgrade() -> None:
    op.drop_index("ix_api_tokens_site_id", "api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("login_failures")
    op.drop_index("ix_staff_site_id", "staff")
    op.drop_table("staff")
    op.drop_index("ix_partnerships_department_id", "partnerships")
    op.drop_table("partnerships")
    op.drop_index("ix_departments_site_id", "departments")
    op.drop_table("departments")
    op.drop_table("sites")
