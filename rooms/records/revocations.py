"""Revoked join tokens: a whole consultation, one person in it, or one link.

A token is refused when any revocation applies to it (``find``). Revoking is idempotent: the
first revocation of a target stands. ``recent`` lets every signaling node learn of
revocations made elsewhere (another node, the CLI) and end the sessions they concern.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import and_, delete, insert, or_, select
from sqlalchemy.exc import IntegrityError

from rooms.consultation import validate_consultation_id
from rooms.records.database import Database
from rooms.records.schema import revocations

# No token outlives this after being minted (signaling.tokens.MAX_HORIZON_S), so a
# revocation without a known expiry matters at most this long.
DEFAULT_KEEP = timedelta(days=367)
MAX_SUBJECT_CHARS = 256


class Scope(StrEnum):
    consultation = "consultation"
    identity = "identity"
    token = "token"


@dataclass(frozen=True)
class Revocation:
    id: int
    consultation_id: str
    scope: Scope
    # The identity or token id; '' for a whole consultation.
    subject: str
    reason: str
    revoked_by: str | None
    revoked_at: datetime
    expires_at: datetime


class Revocations:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def revoke(
        self,
        consultation_id: str,
        scope: Scope,
        subject: str = "",
        *,
        reason: str,
        by: str | None = None,
        expires_at: datetime | None = None,
        now: datetime | None = None,
    ) -> Revocation:
        """Record a revocation (or return the one already there for this target)."""
        validate_consultation_id(consultation_id)
        scope = Scope(scope)
        if (scope is Scope.consultation) != (subject == ""):
            raise ValueError("a consultation revocation has no subject; the others need one")
        if len(subject) > MAX_SUBJECT_CHARS:
            raise ValueError(f"subject longer than {MAX_SUBJECT_CHARS} characters")
        revoked_at = now or datetime.now(UTC)
        row = {
            "consultation_id": consultation_id,
            "scope": scope.value,
            "subject": subject,
            "reason": reason,
            "revoked_by": by,
            "revoked_at": revoked_at,
            "expires_at": expires_at or revoked_at + DEFAULT_KEEP,
        }
        try:
            async with self._db.engine.begin() as conn:
                await conn.execute(insert(revocations).values(**row))
        except IntegrityError:
            pass  # revoked already (maybe by another node at the same moment): that one stands
        found = await self._get(consultation_id, scope, subject)
        assert found is not None
        return found

    async def _get(self, consultation_id: str, scope: Scope, subject: str) -> Revocation | None:
        query = select(revocations).where(
            revocations.c.consultation_id == consultation_id,
            revocations.c.scope == scope.value,
            revocations.c.subject == subject,
        )
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _revocation(row) if row is not None else None

    async def find(
        self,
        consultation_id: str,
        identity: str,
        token_id: str | None,
        *,
        include_consultation: bool = True,
    ) -> Revocation | None:
        """The revocation that refuses a token for (consultation, identity, jti), if any."""
        targets = [
            and_(revocations.c.scope == Scope.identity.value, revocations.c.subject == identity),
        ]
        if include_consultation:
            targets.append(revocations.c.scope == Scope.consultation.value)
        if token_id is not None:
            targets.append(
                and_(revocations.c.scope == Scope.token.value, revocations.c.subject == token_id)
            )
        query = (
            select(revocations)
            .where(revocations.c.consultation_id == consultation_id, or_(*targets))
            .order_by(revocations.c.id)
            .limit(1)
        )
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _revocation(row) if row is not None else None

    async def recent(self, window: timedelta, *, now: datetime | None = None) -> list[Revocation]:
        """Revocations made within ``window`` before ``now``, oldest first.

        By time rather than by id: on PostgreSQL a lower id can commit after a higher one,
        and a poller keeping an id cursor would skip it.
        """
        since = (now or datetime.now(UTC)) - window
        query = (
            select(revocations).where(revocations.c.revoked_at > since).order_by(revocations.c.id)
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_revocation(r) for r in rows]

    async def purge_expired(self, now: datetime | None = None) -> int:
        query = delete(revocations).where(revocations.c.expires_at < (now or datetime.now(UTC)))
        async with self._db.engine.begin() as conn:
            return (await conn.execute(query)).rowcount


def _revocation(row: object) -> Revocation:
    r = dict(row)  # type: ignore[call-overload]
    return Revocation(
        id=r["id"],
        consultation_id=r["consultation_id"],
        scope=Scope(r["scope"]),
        subject=r["subject"],
        reason=r["reason"],
        revoked_by=r["revoked_by"],
        revoked_at=r["revoked_at"],
        expires_at=r["expires_at"],
    )
