"""Back-off and lockout after failed logins, per username and per client address.

Counters live in the records database, so a restart or another node does not reset them.
After ``free_failures`` failures each further attempt waits ``base * 2^(n - free - 1)`` from
the last failure (capped); a username is locked for ``lock`` after ``lock_after`` failures,
and the lock ends by itself (an admin may end it sooner). A success forgets a username's
failures; an address's are forgotten only after a quiet ``forget_after``, so an attacker's
own valid account cannot wipe the address's record between guesses at others.

Usernames are keyed by their SHA-256: what was typed may be a password in the wrong field.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import and_, case, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from rooms.records.database import Database
from rooms.records.schema import login_failures

_MAX_KEY = 80
_PURGE_EVERY = timedelta(hours=1)


@dataclass(frozen=True)
class BackoffPolicy:
    free_failures: int
    base: timedelta
    cap: timedelta
    lock_after: int | None
    lock: timedelta
    forget_after: timedelta

    def wait(self, failures: int) -> timedelta:
        """How long after the last failure the next attempt is let through."""
        over = failures - self.free_failures
        if over <= 0:
            return timedelta(0)
        return min(self.cap, self.base * (2 ** min(over - 1, 30)))


# A person mistyping gets 3 tries free, then 1 s, 2 s, 4 s... and a 30-minute lock at 10.
USERNAME_POLICY = BackoffPolicy(
    free_failures=3,
    base=timedelta(seconds=1),
    cap=timedelta(minutes=5),
    lock_after=10,
    lock=timedelta(minutes=30),
    forget_after=timedelta(hours=24),
)
# A clinic behind one NAT shares an address: more free failures, no lock, only back-off.
ADDRESS_POLICY = BackoffPolicy(
    free_failures=20,
    base=timedelta(seconds=1),
    cap=timedelta(minutes=5),
    lock_after=None,
    lock=timedelta(0),
    forget_after=timedelta(hours=1),
)


class Refusal(StrEnum):
    locked = "locked"
    backoff = "backoff"


@dataclass(frozen=True)
class Hold:
    reason: Refusal
    until: datetime


@dataclass(frozen=True)
class Counter:
    failures: int
    last_failure_at: datetime
    locked_until: datetime | None


def username_key(username: str) -> str:
    return "u:" + hashlib.sha256(username.strip().lower().encode("utf-8")).hexdigest()


def address_key(address: str) -> str:
    return ("a:" + address)[:_MAX_KEY]


class LoginThrottle:
    def __init__(
        self,
        database: Database,
        *,
        username_policy: BackoffPolicy = USERNAME_POLICY,
        address_policy: BackoffPolicy = ADDRESS_POLICY,
    ) -> None:
        self._db = database
        self.username_policy = username_policy
        self.address_policy = address_policy
        self._purged_at: datetime | None = None

    async def check(self, username: str, address: str | None, now: datetime) -> Hold | None:
        """Why an attempt now must be refused without looking at the password, or None."""
        holds = [self._hold(await self.counter(username_key(username)), self.username_policy, now)]
        if address:
            holds.append(
                self._hold(await self.counter(address_key(address)), self.address_policy, now)
            )
        found = [h for h in holds if h is not None]
        if not found:
            return None
        # A lock says more than a back-off; among equals, the later end.
        return max(found, key=lambda h: (h.reason is Refusal.locked, h.until))

    async def failed(self, username: str, address: str | None, now: datetime) -> Counter:
        """Count a failure against both keys; returns the username's counter."""
        counter = await self._count(username_key(username), self.username_policy, now)
        if address:
            await self._count(address_key(address), self.address_policy, now)
        # Guessed usernames leave rows behind; sweep now and then, on the failing path.
        if self._purged_at is None or now - self._purged_at >= _PURGE_EVERY:
            self._purged_at = now
            await self.purge(now)
        return counter

    async def succeeded(self, username: str) -> None:
        await self.unlock(username)

    async def unlock(self, username: str) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(
                delete(login_failures).where(login_failures.c.key == username_key(username))
            )

    async def locked_until(self, username: str, now: datetime) -> datetime | None:
        """When a lock on ``username`` ends, if it is locked now."""
        counter = await self.counter(username_key(username))
        if counter and counter.locked_until and counter.locked_until > now:
            return counter.locked_until
        return None

    async def counter(self, key: str) -> Counter | None:
        query = select(login_failures).where(login_failures.c.key == key)
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        return Counter(row["failures"], row["last_failure_at"], row["locked_until"])

    async def purge(self, now: datetime | None = None) -> int:
        """Forget counters nobody has failed on for longer than any policy remembers."""
        keep = max(self.username_policy.forget_after, self.address_policy.forget_after)
        limit = (now or datetime.now(UTC)) - keep
        query = delete(login_failures).where(
            login_failures.c.last_failure_at < limit,
            or_(login_failures.c.locked_until.is_(None), login_failures.c.locked_until < limit),
        )
        async with self._db.engine.begin() as conn:
            return (await conn.execute(query)).rowcount

    @staticmethod
    def _hold(counter: Counter | None, policy: BackoffPolicy, now: datetime) -> Hold | None:
        if counter is None:
            return None
        locked_until = counter.locked_until
        if locked_until is not None:
            return Hold(Refusal.locked, locked_until) if now < locked_until else None
        if now - counter.last_failure_at >= policy.forget_after:
            return None
        until = counter.last_failure_at + policy.wait(counter.failures)
        return Hold(Refusal.backoff, until) if now < until else None

    async def _count(self, key: str, policy: BackoffPolicy, now: datetime) -> Counter:
        t = login_failures
        # One statement each, so failures counted at the same moment (two nodes, a flood)
        # all count: create the row if missing, then increment in place.
        insert = postgresql.insert if self._db.dialect == "postgresql" else sqlite.insert
        create = (
            insert(t)
            .values(key=key, failures=0, last_failure_at=now, locked_until=None)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        # A lock that has ended, or failures older than the policy remembers, start afresh.
        stale = or_(
            t.c.last_failure_at < now - policy.forget_after,
            and_(t.c.locked_until.is_not(None), t.c.locked_until <= now),
        )
        bump = (
            update(t)
            .where(t.c.key == key)
            .values(
                failures=case((stale, 1), else_=t.c.failures + 1),
                last_failure_at=now,
                locked_until=case((stale, None), else_=t.c.locked_until),
            )
            .returning(t.c.failures, t.c.last_failure_at, t.c.locked_until)
        )
        async with self._db.engine.begin() as conn:
            await conn.execute(create)
            row = (await conn.execute(bump)).one()
            failures, locked_until = int(row[0]), row[2]
            if policy.lock_after is not None and failures >= policy.lock_after:
                if locked_until is None:
                    locked_until = now + policy.lock
                    await conn.execute(
                        update(t).where(t.c.key == key).values(locked_until=locked_until)
                    )
        return Counter(failures, now, locked_until)
