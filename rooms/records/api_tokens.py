"""API tokens for hospital systems: each scoped to one site, shown once, stored hashed.

A token is ``tcs_`` and 43 URL-safe characters (256 random bits). Only its SHA-256 is
stored: unlike a password it is random and long, so a fast hash cannot be reversed by
guessing, and the check is one indexed look-up. It is sent as ``Authorization: Bearer``.
Hospital systems that mint join JWTs keep doing so with the join secret (docs/tokens.md);
these tokens are for the front desk's JSON API.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import insert, select, update

from rooms.records.access import Actor
from rooms.records.database import Database
from rooms.records.errors import Forbidden, NotFound
from rooms.records.ids import new_id
from rooms.records.schema import api_tokens
from rooms.records.sites import Sites, clean_name

PREFIX = "tcs_"
_MAX_LABEL = 100
# Longer input is not a token of ours; refuse before hashing anything an attacker sends.
_MAX_TOKEN_CHARS = 128


@dataclass(frozen=True)
class ApiToken:
    id: str
    site_id: str
    label: str
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None
    revoked_by: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def require_site(self, site_id: str) -> None:
        """Raise Forbidden unless this token is for ``site_id``."""
        if site_id != self.site_id:
            raise Forbidden("this API token is for another site")


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    # The only time the secret exists outside the caller: show it once, never log it.
    secret: str = field(repr=False)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class ApiTokens:
    def __init__(self, database: Database, sites: Sites) -> None:
        self._db = database
        self._sites = sites

    async def issue(
        self, actor: Actor, site_id: str, label: str, *, now: datetime | None = None
    ) -> IssuedToken:
        actor.require_admin_of(site_id)
        await self._sites.get(site_id)
        secret = PREFIX + secrets.token_urlsafe(32)
        row = {
            "id": new_id("tok"),
            "site_id": site_id,
            "label": clean_name(label, "label", _MAX_LABEL),
            "token_hash": _digest(secret),
            "created_at": now or datetime.now(UTC),
            "created_by": actor.id,
            "revoked_at": None,
            "revoked_by": None,
        }
        async with self._db.engine.begin() as conn:
            await conn.execute(insert(api_tokens).values(**row))
        return IssuedToken(_token(row), secret)

    async def check(self, secret: str) -> ApiToken | None:
        """The live token ``secret`` is, or None (unknown, revoked, malformed)."""
        if not secret.startswith(PREFIX) or len(secret) > _MAX_TOKEN_CHARS:
            return None
        query = select(api_tokens).where(
            api_tokens.c.token_hash == _digest(secret), api_tokens.c.revoked_at.is_(None)
        )
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _token(row) if row is not None else None

    async def revoke(
        self, actor: Actor, token_id: str, *, now: datetime | None = None
    ) -> ApiToken:
        token = await self.get(token_id)
        if not actor.is_admin_of(token.site_id):
            raise NotFound("no such API token")
        async with self._db.engine.begin() as conn:
            await conn.execute(
                update(api_tokens)
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now or datetime.now(UTC), revoked_by=actor.id)
            )
        return await self.get(token_id)

    async def get(self, token_id: str) -> ApiToken:
        query = select(api_tokens).where(api_tokens.c.id == token_id)
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise NotFound("no such API token")
        return _token(row)

    async def list(self, actor: Actor, site_id: str) -> list[ApiToken]:
        actor.require_admin_of(site_id)
        query = (
            select(api_tokens)
            .where(api_tokens.c.site_id == site_id)
            .order_by(api_tokens.c.created_at, api_tokens.c.id)
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_token(r) for r in rows]


def _token(row: object) -> ApiToken:
    r = dict(row)  # type: ignore[call-overload]
    return ApiToken(
        id=r["id"],
        site_id=r["site_id"],
        label=r["label"],
        created_at=r["created_at"],
        created_by=r["created_by"],
        revoked_at=r["revoked_at"],
        revoked_by=r["revoked_by"],
    )
