"""The tables, in SQLAlchemy Core. Alembic migrations (rooms/records/migrations) create them;
this module is what the code and ``alembic revision --autogenerate`` compare against."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect

# Stable constraint names, so migrations can refer to them on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (SQLite keeps no zone and returns naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored: give a timezone")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# A join token stops working when its consultation, its person (identity) in that
# consultation, or the token itself (jti) is revoked. ``subject`` is the identity or the jti,
# '' for the whole consultation (NULLs are distinct in unique constraints on PostgreSQL).
revocations = Table(
    "revocations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("consultation_id", String(64), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("subject", String(256), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("revoked_by", String(256), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=False),
    # No token it could refuse lives past this (tokens are bounded); then it may be purged.
    Column("expires_at", UtcDateTime(), nullable=False),
    UniqueConstraint("consultation_id", "scope", "subject", name="uq_revocations_target"),
    Index("ix_revocations_consultation_id", "consultation_id"),
    Index("ix_revocations_revoked_at", "revoked_at"),
)


# --- the front desk: sites, departments, partnerships, staff, login back-off, API tokens ---
# Ids are opaque random strings with a prefix (site_, dept_, ptn_, stf_, tok_): they may be
# logged, audited and put in URLs; names may not be logged.

sites = Table(
    "sites",
    metadata,
    Column("id", String(32), primary_key=True),
    # village_clinic, township_health_centre, community_hospital, nursing_home, expert_hospital
    Column("kind", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

departments = Table(
    "departments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("site_id", String(32), ForeignKey("sites.id"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    UniqueConstraint("site_id", "name", name="uq_departments_site_name"),
    Index("ix_departments_site_id", "site_id"),
)

# A requesting site may ask a department of an expert hospital for consultations. Ending one
# keeps the row (ended_at), so who could ask whom, and when, stays answerable; creating it
# again reopens the same row.
partnerships = Table(
    "partnerships",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("requester_site_id", String(32), ForeignKey("sites.id"), nullable=False),
    Column("department_id", String(32), ForeignKey("departments.id"), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("created_by", String(32), nullable=True),
    Column("ended_at", UtcDateTime(), nullable=True),
    Column("ended_by", String(32), nullable=True),
    UniqueConstraint("requester_site_id", "department_id", name="uq_partnerships_pair"),
    Index("ix_partnerships_department_id", "department_id"),
)

staff = Table(
    "staff",
    metadata,
    Column("id", String(32), primary_key=True),
    # Lower case, unique across the whole installation.
    Column("username", String(64), nullable=False),
    Column("display_name", String(200), nullable=False),
    Column("password_hash", String(255), nullable=False),
    # None only for a platform admin without a site of their own.
    Column("site_id", String(32), ForeignKey("sites.id"), nullable=True),
    Column("role", String(16), nullable=False),
    Column("platform_admin", Boolean(), nullable=False, default=False),
    Column("disabled_at", UtcDateTime(), nullable=True),
    # Every session cookie carries the generation it was issued under; bumping it (logout,
    # password change, disabling) kills every copy of every cookie of this account.
    Column("session_generation", Integer, nullable=False, default=0),
    # Ed25519: the public key raw (32 bytes); the private key sealed with AES-256-GCM under a
    # key derived from the master key, the staff id as associated data.
    Column("public_key", LargeBinary(32), nullable=False),
    Column("private_key_sealed", LargeBinary(128), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("password_changed_at", UtcDateTime(), nullable=False),
    UniqueConstraint("username", name="uq_staff_username"),
    Index("ix_staff_site_id", "site_id"),
)

# Failed logins per key: "u:" + SHA-256 of a username (typed, so possibly unknown or a
# mistyped password: never stored as typed) or "a:" + a client address.
login_failures = Table(
    "login_failures",
    metadata,
    Column("key", String(80), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", UtcDateTime(), nullable=False),
    Column("locked_until", UtcDateTime(), nullable=True),
)

# Bearer tokens for a hospital system, each scoped to one site. Only the SHA-256 of the
# token is kept (it is random and long, so a plain hash cannot be reversed by guessing).
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("site_id", String(32), ForeignKey("sites.id"), nullable=False),
    Column("label", String(100), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("created_by", String(32), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Column("revoked_by", String(32), nullable=True),
    UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    Index("ix_api_tokens_site_id", "site_id"),
)


# --- consultations: requests, scheduling, invitations, attachments, opinions ---
# Clinical fields (patient names, reasons, display names of invitees, join links, file names,
# opinions) are sealed with the consultation's data key (rooms/records/clinical.py) in the
# *_sealed columns; destroying that key (retention) leaves the rest of a row, which holds
# only ids, kinds, states and times.

# One per consultation; ``id`` is the opaque consultation id of its join tokens.
consultations = Table(
    "consultations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    # "request" (asked of an expert department) or "now" (started at once by a doctor).
    Column("origin", String(16), nullable=False),
    # The requesting site, whose doctor runs the consultation.
    Column("site_id", String(32), ForeignKey("sites.id"), nullable=False),
    # The expert department asked, and its site (kept here so visibility is one query).
    Column("department_id", String(32), ForeignKey("departments.id"), nullable=True),
    Column("expert_site_id", String(32), ForeignKey("sites.id"), nullable=True),
    Column("created_by", String(32), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("patient_name_sealed", LargeBinary(), nullable=True),
    Index("ix_consultations_site_id", "site_id"),
    Index("ix_consultations_expert_site_id", "expert_site_id"),
)

# Staff taking part: the requesting doctor, the accepting expert, and staff invited by name.
consultation_staff = Table(
    "consultation_staff",
    metadata,
    Column("consultation_id", String(64), ForeignKey("consultations.id"), primary_key=True),
    Column("staff_id", String(32), ForeignKey("staff.id"), primary_key=True),
    # The call role they join with (doctor, nurse, expert).
    Column("role", String(16), nullable=False),
    Column("added_by", String(32), nullable=False),
    Column("added_at", UtcDateTime(), nullable=False),
    Index("ix_consultation_staff_staff_id", "staff_id"),
)

# A request for an expert consultation. Deciding it is a conditional UPDATE on ``status``,
# so of two experts accepting at once exactly one wins.
consultation_requests = Table(
    "consultation_requests",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("consultation_id", String(64), ForeignKey("consultations.id"), nullable=False),
    Column("department_id", String(32), ForeignKey("departments.id"), nullable=False),
    Column("requested_by", String(32), nullable=False),
    # routine | urgent | emergency, and its rank (emergency 0) for the queue's order.
    Column("urgency", String(16), nullable=False),
    Column("urgency_rank", Integer, nullable=False),
    Column("reason_sealed", LargeBinary(), nullable=False),
    # JSON list of ISO-8601 UTC times the requesting doctor prefers (no clinical content).
    Column("preferred_times", Text(), nullable=False),
    # pending | proposed | accepted | declined
    Column("status", String(16), nullable=False),
    Column("proposed_start", UtcDateTime(), nullable=True),
    Column("proposed_minutes", Integer, nullable=True),
    Column("proposed_by", String(32), nullable=True),
    Column("decided_by", String(32), nullable=True),
    Column("decided_at", UtcDateTime(), nullable=True),
    Column("decline_reason_sealed", LargeBinary(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    UniqueConstraint("consultation_id", name="uq_consultation_requests_consultation_id"),
    Index("ix_consultation_requests_department_id", "department_id", "status"),
)

# When a consultation happens. Rescheduling bumps ``sequence`` (the .ics SEQUENCE).
appointments = Table(
    "appointments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("consultation_id", String(64), ForeignKey("consultations.id"), nullable=False),
    Column("starts_at", UtcDateTime(), nullable=False),
    Column("minutes", Integer, nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("updated_by", String(32), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    UniqueConstraint("consultation_id", name="uq_appointments_consultation_id"),
)

# Every join link handed out for a consultation: to a patient or relative (the link itself
# is kept, sealed, for its QR code and printable page), or to a staff member. ``jti`` is
# what revokes it when the appointment moves.
invitations = Table(
    "invitations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("consultation_id", String(64), ForeignKey("consultations.id"), nullable=False),
    Column("jti", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("identity", String(256), nullable=False),
    Column("staff_id", String(32), ForeignKey("staff.id"), nullable=True),
    Column("name_sealed", LargeBinary(), nullable=False),
    Column("token_sealed", LargeBinary(), nullable=True),
    Column("valid_from", UtcDateTime(), nullable=False),
    Column("valid_until", UtcDateTime(), nullable=False),
    # The appointment's sequence the link was made for.
    Column("sequence", Integer, nullable=False),
    Column("created_by", String(32), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Column("revoked_by", String(32), nullable=True),
    UniqueConstraint("jti", name="uq_invitations_jti"),
    Index("ix_invitations_consultation_id", "consultation_id"),
)

# Images and PDF reports; the bytes are in an encrypted file named by the id.
attachments = Table(
    "attachments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("consultation_id", String(64), ForeignKey("consultations.id"), nullable=False),
    Column("media_type", String(32), nullable=False),
    Column("size", Integer, nullable=False),
    # Of the stored plaintext (after images were re-encoded): checked on every download.
    Column("sha256", String(64), nullable=False),
    Column("name_sealed", LargeBinary(), nullable=False),
    Column("uploaded_by", String(32), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_attachments_consultation_id", "consultation_id"),
)

# Signed expert opinions. ``body_sealed`` is the exact signed message (canonical JSON),
# sealed; an amendment is a new version naming the one it supersedes.
opinions = Table(
    "opinions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("consultation_id", String(64), ForeignKey("consultations.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("supersedes", String(32), nullable=True),
    Column("author_id", String(32), ForeignKey("staff.id"), nullable=False),
    # SHA-256 of the author's public key, first 16 bytes in hex.
    Column("key_id", String(32), nullable=False),
    Column("signed_at", UtcDateTime(), nullable=False),
    Column("body_sealed", LargeBinary(), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    Column("acknowledged_by", String(32), nullable=True),
    Column("acknowledged_at", UtcDateTime(), nullable=True),
    UniqueConstraint("consultation_id", "version", name="uq_opinions_version"),
)

# What happened to a consultation, in order: kinds and opaque ids only, never content.
consultation_events = Table(
    "consultation_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("consultation_id", String(64), ForeignKey("consultations.id"), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("by", String(32), nullable=True),
    Column("ref", String(64), nullable=True),
    Index("ix_consultation_events_consultation_id", "consultation_id"),
)

# The webhook outbox: one row per event and endpoint, written once when the event is
# published and sent from here, so a restart loses nothing. ``endpoint`` is a key derived
# from the endpoint's URL (never the URL, which may carry a token); ``body`` is the exact
# JSON that is signed and sent, ids only. Sent in id order per (endpoint, consultation).
webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(40), nullable=False),
    Column("endpoint", String(32), nullable=False),
    Column("consultation_id", String(64), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("body", Text(), nullable=False),
    # pending | delivered | dead
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    # After this, a pending row is given up (dead); a retry sets it again.
    Column("give_up_at", UtcDateTime(), nullable=False),
    # A sender (of any node) holds the row until then: one attempt at a time.
    Column("claimed_until", UtcDateTime(), nullable=True),
    Column("delivered_at", UtcDateTime(), nullable=True),
    # The last failure as a status or an error class: never a response body.
    Column("last_error", String(200), nullable=True),
    UniqueConstraint("event_id", "endpoint", name="uq_webhook_outbox_delivery"),
    Index("ix_webhook_outbox_state", "state", "endpoint", "consultation_id", "id"),
)

# --- call quality: the Workers' samples of each participant's media (media/quality.py) ---
# Opaque per-session participant ids and call roles, never a name; numbers, not clinical
# text, so not sealed. Kept only for consultations with a record, and deleted when the
# consultation is purged (rooms/records/quality.py).
call_quality = Table(
    "call_quality",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("consultation_id", String(64), ForeignKey("consultations.id"), nullable=False),
    Column("participant_id", String(32), nullable=False),
    Column("role", String(16), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("interval_s", Float, nullable=False),
    Column("loss_in", Float, nullable=True),
    Column("loss_out", Float, nullable=True),
    Column("rtt_ms", Float, nullable=True),
    Column("fps_in", Float, nullable=True),
    Column("fps_out", Float, nullable=True),
    Column("kbps_in", Float, nullable=True),
    Column("kbps_out", Float, nullable=True),
    Index("ix_call_quality_consultation_id", "consultation_id", "at"),
)

# The call's chat, kept with a consultation that has a record (signaling/room/chat.py).
# ``body_sealed`` is the sender's display name and the text, as JSON, sealed with the
# consultation's data key; the row itself holds only opaque ids, the role and the time.
chat_messages = Table(
    "chat_messages",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("consultation_id", String(64), ForeignKey("consultations.id"), nullable=False),
    Column("participant_id", String(32), nullable=False),
    Column("role", String(16), nullable=False),
    Column("body_sealed", LargeBinary(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_chat_messages_consultation_id", "consultation_id", "created_at"),
)

# Images shown in a call (signaling/sharing): a photo re-encoded, or a DICOM image rendered
# per window preset. Each rendition is an encrypted file named by the image and preset;
# ``renditions`` lists them as JSON ([{"preset", "size", "sha256"}]: no clinical content);
# ``info_sealed`` holds the technical tags (modality, body part, ...), sealed.
shared_images = Table(
    "shared_images",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("consultation_id", String(64), ForeignKey("consultations.id"), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("media_type", String(32), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("renditions", Text(), nullable=False),
    Column("info_sealed", LargeBinary(), nullable=True),
    Column("shared_by", String(32), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_shared_images_consultation_id", "consultation_id"),
)

# A ward round's agenda of beds, in order. ``body_sealed`` holds the bed label, the opaque
# patient reference and the short note as JSON, sealed with the consultation's data key;
# ``summary_sealed`` the round's summary of the bed (who had the floor, who spoke, notes),
# filed when the round moves on or ends.
ward_beds = Table(
    "ward_beds",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("consultation_id", String(64), ForeignKey("consultations.id"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("body_sealed", LargeBinary(), nullable=False),
    Column("summary_sealed", LargeBinary(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_ward_beds_consultation_id", "consultation_id", "position"),
)

# --- nursing-home terminals (rooms/records/terminals.py) ---
# A terminal is a browser on a tablet or TV box registered to a nursing-home site. Its
# device credential is random and long: only its SHA-256 is kept (NULL until the terminal
# has collected it after pairing). ``auto_answer_s``: 0 = the resident answers; else the
# terminal answers by itself after that many seconds of ringing.
terminals = Table(
    "terminals",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("site_id", String(32), ForeignKey("sites.id"), nullable=False),
    Column("label", String(100), nullable=False),
    Column("credential_hash", String(64), nullable=True),
    Column("auto_answer_s", Integer, nullable=False, default=0),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("created_by", String(32), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Column("revoked_by", String(32), nullable=True),
    # Heard from (its stream opened, a heartbeat) and its stream closed: online is a recent
    # ``last_seen_at`` after the last ``disconnected_at``, whichever node holds the stream.
    Column("last_seen_at", UtcDateTime(), nullable=True),
    Column("disconnected_at", UtcDateTime(), nullable=True),
    Column("last_called_at", UtcDateTime(), nullable=True),
    UniqueConstraint("credential_hash", name="uq_terminals_credential_hash"),
    Index("ix_terminals_site_id", "site_id"),
)

# A pairing in progress: the 6-digit code a terminal shows (kept as an HMAC under a key
# derived from the master key: a plain hash of six digits is reversed by trying them all)
# and the ticket the terminal polls with (random, SHA-256). ``terminal_id`` is set when a
# site admin enters the code; ``collected_at`` when the terminal takes its credential.
terminal_pairings = Table(
    "terminal_pairings",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("code_hash", String(64), nullable=False),
    Column("ticket_hash", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("terminal_id", String(32), nullable=True),
    Column("collected_at", UtcDateTime(), nullable=True),
    UniqueConstraint("ticket_hash", name="uq_terminal_pairings_ticket_hash"),
    Index("ix_terminal_pairings_code_hash", "code_hash"),
)

# Wrong pairing codes entered at a site's console, to limit guessing.
terminal_pairing_failures = Table(
    "terminal_pairing_failures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("site_id", String(32), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Index("ix_terminal_pairing_failures_site_id", "site_id", "at"),
)

# Each call to a terminal: the consultation it was called into and who called, so revoking
# the terminal ends its live calls (by its identity in those consultations).
terminal_calls = Table(
    "terminal_calls",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("terminal_id", String(32), ForeignKey("terminals.id"), nullable=False),
    Column("consultation_id", String(64), ForeignKey("consultations.id"), nullable=False),
    Column("jti", String(64), nullable=False),
    Column("created_by", String(32), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Index("ix_terminal_calls_terminal_id", "terminal_id"),
)
