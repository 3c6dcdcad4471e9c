"""Nursing-home terminals: pairing, device credentials, revocation, calls.

Pairing: a terminal page asks for a pairing (``start_pairing``) and shows its 6-digit code;
a site admin of a nursing home enters the code with a label (``pair``); the terminal, which
polls with the pairing's ticket, then collects its device credential once (``collect``).

- The code lives 10 minutes. It is kept as an HMAC under a key derived from the master key
  (a plain hash of six digits is reversed by trying all million). At most
  ``MAX_FAILURES`` wrong codes per site per ``FAILURE_WINDOW``; beyond that every attempt is
  refused (``too_many_attempts``), right or wrong, so guessing a million codes is hopeless.
- The device credential (``tct_`` and 43 URL-safe characters, 256 random bits) is created
  when the terminal collects it, so it never exists on the server but in that one answer;
  only its SHA-256 is kept. It is scoped to one terminal of one site; it is not a staff
  password and opens nothing but the terminal's own endpoints.
- Revoking a terminal (``revoke``) makes its credential unknown at once; the caller ends its
  connection and live calls (signaling/terminal).

Who may do what: site admins of the home (and platform admins) pair, configure and revoke;
the home's doctors and nurses see its terminals and call them (``require_caller``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, insert, select, update

from rooms.records.access import Actor
from rooms.records.database import Database
from rooms.records.errors import Forbidden, InvalidInput, NotFound, RecordError
from rooms.records.ids import new_id
from rooms.records.schema import (
    terminal_calls,
    terminal_pairing_failures,
    terminal_pairings,
    terminals,
)
from rooms.records.sites import SiteKind, Sites, clean_name
from rooms.roles import StaffRole

CREDENTIAL_PREFIX = "tct_"
CODE_DIGITS = 6
CODE_TTL = timedelta(minutes=10)
# A pairing entered just before its code expired is still collected by a terminal that
# polls every couple of seconds.
COLLECT_GRACE = timedelta(minutes=2)
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
# Pairings waiting for a code at once, across the installation: the terminal page needs no
# login, so this bounds what anyone can make the server keep.
MAX_OPEN_PAIRINGS = 1000
MAX_LABEL = 100
AUTO_ANSWER_CHOICES = (0, 5, 10, 15, 30)
_MAX_SECRET_CHARS = 128


class TooManyAttempts(RecordError):
    code = "too_many_attempts"


class Busy(RecordError):
    code = "busy"


@dataclass(frozen=True)
class Terminal:
    id: str
    site_id: str
    label: str
    auto_answer_s: int
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revoked_by: str | None
    last_seen_at: datetime | None
    disconnected_at: datetime | None
    last_called_at: datetime | None
    paired: bool

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def identity(self) -> str:
        """Who the terminal is in a consultation's call (its join tokens' ``sub``)."""
        return f"terminal-{self.id}"


@dataclass(frozen=True)
class Pairing:
    id: str
    expires_at: datetime
    # Shown on the terminal's screen and returned once; never stored as such.
    code: str = field(repr=False)
    ticket: str = field(repr=False)


@dataclass(frozen=True)
class Collected:
    """What a terminal polling with its ticket learns."""

    state: str  # "waiting", "paired", "expired"
    terminal: Terminal | None = None
    credential: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TerminalCall:
    id: str
    terminal_id: str
    consultation_id: str
    jti: str
    created_by: str
    created_at: datetime
    expires_at: datetime


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def pairing_key(master_key: bytes) -> bytes:
    return hmac.new(master_key, b"teleconsult terminal pairing codes v1", "sha256").digest()


def label_text(value: str) -> str:
    return clean_name(value, "label", MAX_LABEL)


def auto_answer_seconds(value: str | int) -> int:
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        raise InvalidInput("auto_answer is a number of seconds") from None
    if seconds not in AUTO_ANSWER_CHOICES:
        raise InvalidInput(f"auto_answer is one of {AUTO_ANSWER_CHOICES}")
    return seconds


class Terminals:
    def __init__(self, database: Database, sites: Sites, key: bytes) -> None:
        self._db = database
        self._sites = sites
        self._key = key

    def _code_hash(self, code: str) -> str:
        return hmac.new(self._key, code.encode("ascii"), "sha256").hexdigest()

    # ------------------------------------------------------------ pairing

    async def start_pairing(self, *, now: datetime | None = None) -> Pairing:
        """A new code for a terminal page (no login: bounded by MAX_OPEN_PAIRINGS)."""
        at = now or datetime.now(UTC)
        async with self._db.engine.begin() as conn:
            # Old pairings are of no use to anyone: drop them as new ones come.
            await conn.execute(
                delete(terminal_pairings).where(terminal_pairings.c.expires_at < at - COLLECT_GRACE)
            )
            open_now = (
                await conn.execute(
                    select(func.count()).where(
                        terminal_pairings.c.expires_at > at,
                        terminal_pairings.c.terminal_id.is_(None),
                    )
                )
            ).scalar_one()
            if open_now >= MAX_OPEN_PAIRINGS:
                raise Busy("too many terminals are pairing at once; try again in a minute")
            for _ in range(20):
                code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
                taken = (
                    await conn.execute(
                        select(terminal_pairings.c.id).where(
                            terminal_pairings.c.code_hash == self._code_hash(code),
                            terminal_pairings.c.expires_at > at,
                        )
                    )
                ).first()
                if taken is None:
                    break
            else:
                raise Busy("no free pairing code; try again in a minute")
            ticket = secrets.token_urlsafe(32)
            pairing_id = new_id("pair")
            expires = at + CODE_TTL
            await conn.execute(
                insert(terminal_pairings).values(
                    id=pairing_id,
                    code_hash=self._code_hash(code),
                    ticket_hash=_sha256(ticket),
                    created_at=at,
                    expires_at=expires,
                    terminal_id=None,
                    collected_at=None,
                )
            )
        return Pairing(pairing_id, expires, code, ticket)

    async def pair(
        self,
        actor: Actor,
        site_id: str,
        code: str,
        label: str,
        *,
        auto_answer_s: int = 0,
        now: datetime | None = None,
    ) -> Terminal:
        """A site admin enters the code a terminal shows: the terminal is registered to the
        site; it collects its credential on its next poll."""
        actor.require_admin_of(site_id)
        site = await self._sites.get(site_id)
        if site.kind is not SiteKind.nursing_home:
            raise InvalidInput("terminals belong to nursing homes", code="not_nursing_home")
        label = label_text(label)
        auto_answer_s = auto_answer_seconds(auto_answer_s)
        at = now or datetime.now(UTC)
        code = code.strip().replace(" ", "")
        async with self._db.engine.begin() as conn:
            # Failures older than the window count for nothing: drop them as new ones come.
            await conn.execute(
                delete(terminal_pairing_failures).where(
                    terminal_pairing_failures.c.at <= at - FAILURE_WINDOW
                )
            )
            failures = (
                await conn.execute(
                    select(func.count()).where(
                        terminal_pairing_failures.c.site_id == site_id,
                        terminal_pairing_failures.c.at > at - FAILURE_WINDOW,
                    )
                )
            ).scalar_one()
            if failures >= MAX_FAILURES:
                raise TooManyAttempts(
                    f"too many wrong codes: wait {int(FAILURE_WINDOW.total_seconds() // 60)} "
                    "minutes"
                )
            found = None
            if len(code) == CODE_DIGITS and code.isascii() and code.isdigit():
                found = (
                    (
                        await conn.execute(
                            select(terminal_pairings)
                            .where(
                                terminal_pairings.c.code_hash == self._code_hash(code),
                                terminal_pairings.c.terminal_id.is_(None),
                            )
                            .order_by(terminal_pairings.c.expires_at.desc())
                        )
                    )
                    .mappings()
                    .first()
                )
            if found is None or found["expires_at"] <= at:
                await conn.execute(insert(terminal_pairing_failures).values(site_id=site_id, at=at))
        # Outside the transaction above, so the failure is kept when the refusal is raised.
        if found is None:
            raise InvalidInput("no terminal shows this code", code="wrong_code")
        if found["expires_at"] <= at:
            raise InvalidInput("this code has expired: the terminal shows a new one",
                               code="expired_code")  # fmt: skip
        row = {
            "id": new_id("term"),
            "site_id": site_id,
            "label": label,
            "credential_hash": None,
            "auto_answer_s": auto_answer_s,
            "created_at": at,
            "created_by": actor.id,
            "revoked_at": None,
            "revoked_by": None,
            "last_seen_at": None,
            "disconnected_at": None,
            "last_called_at": None,
        }
        async with self._db.engine.begin() as conn:
            claimed = await conn.execute(
                update(terminal_pairings)
                .where(
                    terminal_pairings.c.id == found["id"],
                    terminal_pairings.c.terminal_id.is_(None),
                )
                .values(terminal_id=row["id"])
            )
            if claimed.rowcount != 1:
                raise InvalidInput("no terminal shows this code", code="wrong_code")
            await conn.execute(insert(terminals).values(**row))
        return _terminal(row)

    async def collect(self, ticket: str, *, now: datetime | None = None) -> Collected:
        """The terminal's poll: still waiting, paired (the credential, once), or expired.
        An unknown ticket (or one already collected) is NotFound."""
        if not ticket or len(ticket) > _MAX_SECRET_CHARS:
            raise NotFound("no such pairing")
        at = now or datetime.now(UTC)
        query = select(terminal_pairings).where(
            terminal_pairings.c.ticket_hash == _sha256(ticket),
            terminal_pairings.c.collected_at.is_(None),
        )
        async with self._db.engine.connect() as conn:
            found = (await conn.execute(query)).mappings().first()
        if found is None:
            raise NotFound("no such pairing")
        if found["terminal_id"] is None:
            return Collected("expired" if found["expires_at"] <= at else "waiting")
        if found["expires_at"] + COLLECT_GRACE <= at:
            return Collected("expired")
        credential = CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
        async with self._db.engine.begin() as conn:
            taken = await conn.execute(
                update(terminal_pairings)
                .where(
                    terminal_pairings.c.id == found["id"],
                    terminal_pairings.c.collected_at.is_(None),
                )
                .values(collected_at=at)
            )
            if taken.rowcount != 1:
                raise NotFound("no such pairing")
            await conn.execute(
                update(terminals)
                .where(terminals.c.id == found["terminal_id"], terminals.c.revoked_at.is_(None))
                .values(credential_hash=_sha256(credential), last_seen_at=at)
            )
        terminal = await self.get(found["terminal_id"])
        if not terminal.active:
            return Collected("expired")
        return Collected("paired", terminal, credential)

    # ------------------------------------------------------------ the device credential

    async def authenticate(self, credential: str | None) -> Terminal | None:
        """The live terminal ``credential`` belongs to, or None (unknown, revoked)."""
        if (
            not credential
            or not credential.startswith(CREDENTIAL_PREFIX)
            or len(credential) > _MAX_SECRET_CHARS
        ):
            return None
        query = select(terminals).where(
            terminals.c.credential_hash == _sha256(credential), terminals.c.revoked_at.is_(None)
        )
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _terminal(row) if row is not None else None

    async def seen(self, terminal_id: str, *, now: datetime | None = None) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(
                update(terminals)
                .where(terminals.c.id == terminal_id)
                .values(last_seen_at=now or datetime.now(UTC))
            )

    async def gone(self, terminal_id: str, *, now: datetime | None = None) -> None:
        """Its event stream closed."""
        async with self._db.engine.begin() as conn:
            await conn.execute(
                update(terminals)
                .where(terminals.c.id == terminal_id)
                .values(disconnected_at=now or datetime.now(UTC))
            )

    # ------------------------------------------------------------ managing

    async def get(self, terminal_id: str) -> Terminal:
        query = select(terminals).where(terminals.c.id == terminal_id)
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise NotFound("no such terminal")
        return _terminal(row)

    async def manageable(self, actor: Actor, terminal_id: str) -> Terminal:
        """The terminal, for an admin of its site; NotFound for anyone else."""
        terminal = await self.get(terminal_id)
        if not actor.is_admin_of(terminal.site_id):
            raise NotFound("no such terminal")
        return terminal

    async def list(self, actor: Actor, site_id: str) -> list[Terminal]:
        """A site's terminals, live ones first: for its admins, doctors and nurses."""
        if not (actor.is_admin_of(site_id) or _calls_for(actor, site_id)):
            raise Forbidden("only this site's admins, doctors and nurses see its terminals")
        query = (
            select(terminals)
            .where(terminals.c.site_id == site_id)
            .order_by(terminals.c.revoked_at.is_not(None), terminals.c.label, terminals.c.id)
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_terminal(r) for r in rows]

    async def set_auto_answer(self, actor: Actor, terminal_id: str, seconds: str | int) -> Terminal:
        terminal = await self.manageable(actor, terminal_id)
        value = auto_answer_seconds(seconds)
        async with self._db.engine.begin() as conn:
            await conn.execute(
                update(terminals).where(terminals.c.id == terminal.id).values(auto_answer_s=value)
            )
        return await self.get(terminal.id)

    async def revoke(
        self, actor: Actor, terminal_id: str, *, now: datetime | None = None
    ) -> Terminal:
        terminal = await self.manageable(actor, terminal_id)
        async with self._db.engine.begin() as conn:
            await conn.execute(
                update(terminals)
                .where(terminals.c.id == terminal.id, terminals.c.revoked_at.is_(None))
                .values(revoked_at=now or datetime.now(UTC), revoked_by=actor.id)
            )
        return await self.get(terminal.id)

    # ------------------------------------------------------------ calls

    async def require_caller(self, actor: Actor, terminal_id: str) -> Terminal:
        """The live terminal, for one of its home's doctors or nurses to call."""
        terminal = await self.get(terminal_id)
        if not _calls_for(actor, terminal.site_id):
            raise NotFound("no such terminal")
        if not terminal.active:
            raise InvalidInput("this terminal has been revoked", code="revoked")
        if not terminal.paired:
            raise InvalidInput("this terminal has not finished pairing", code="not_paired")
        return terminal

    async def add_call(
        self,
        terminal: Terminal,
        consultation_id: str,
        jti: str,
        by: str,
        expires_at: datetime,
        *,
        now: datetime | None = None,
    ) -> TerminalCall:
        at = now or datetime.now(UTC)
        row = {
            "id": new_id("tcall"),
            "terminal_id": terminal.id,
            "consultation_id": consultation_id,
            "jti": jti,
            "created_by": by,
            "created_at": at,
            "expires_at": expires_at,
        }
        async with self._db.engine.begin() as conn:
            await conn.execute(insert(terminal_calls).values(**row))
            await conn.execute(
                update(terminals).where(terminals.c.id == terminal.id).values(last_called_at=at)
            )
        return TerminalCall(**row)

    async def call(self, terminal_id: str, call_id: str) -> TerminalCall:
        query = select(terminal_calls).where(
            terminal_calls.c.id == call_id, terminal_calls.c.terminal_id == terminal_id
        )
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise NotFound("no such call")
        return TerminalCall(**dict(row))

    async def live_calls(
        self, terminal_id: str, *, now: datetime | None = None
    ) -> list[TerminalCall]:
        """Calls whose join token may still work: to end when the terminal is revoked."""
        query = select(terminal_calls).where(
            terminal_calls.c.terminal_id == terminal_id,
            terminal_calls.c.expires_at > (now or datetime.now(UTC)),
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [TerminalCall(**dict(r)) for r in rows]


def _calls_for(actor: Actor, site_id: str) -> bool:
    return (
        not actor.system
        and actor.has_role(StaffRole.doctor, StaffRole.nurse)
        and actor.site_id == site_id
    )


def _terminal(row: object) -> Terminal:
    r = dict(row)  # type: ignore[call-overload]
    return Terminal(
        id=r["id"],
        site_id=r["site_id"],
        label=r["label"],
        auto_answer_s=int(r["auto_answer_s"]),
        created_at=r["created_at"],
        created_by=r["created_by"],
        revoked_at=r["revoked_at"],
        revoked_by=r["revoked_by"],
        last_seen_at=r["last_seen_at"],
        disconnected_at=r["disconnected_at"],
        last_called_at=r["last_called_at"],
        paired=r["credential_hash"] is not None,
    )
