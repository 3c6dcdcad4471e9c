"""Checking a staff login: throttle first, then the password, the same cost for everyone.

The caller shows one generic message for every failure; ``LoginResult.outcome`` is for the
audit log only. An unknown username, a malformed one, a wrong password and a disabled account
all cost one Argon2 verification, so the answer's timing does not tell them apart.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from rooms.records.errors import RecordError
from rooms.records.login_throttle import LoginThrottle, Refusal
from rooms.records.passwords import MAX_PASSWORD, Busy
from rooms.records.staff import Staff, StaffMember

log = logging.getLogger(__name__)


class LoginOutcome(StrEnum):
    ok = "ok"
    bad_credentials = "bad_credentials"
    disabled = "disabled"
    backoff = "backoff"
    locked = "locked"
    busy = "busy"


@dataclass(frozen=True)
class LoginResult:
    outcome: LoginOutcome
    # The account the username named, if any (also on failure: the audit log records it).
    member: StaffMember | None = None
    # When a back-off or lock ends.
    until: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is LoginOutcome.ok


class Authenticator:
    def __init__(
        self,
        staff: Staff,
        throttle: LoginThrottle,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._staff = staff
        self.throttle = throttle
        self._clock = clock

    async def login(self, username: str, password: str, address: str | None) -> LoginResult:
        now = self._clock()
        username = username.strip().lower()[:256]
        hold = await self.throttle.check(username, address, now)
        if hold is not None:
            outcome = LoginOutcome.locked if hold.reason is Refusal.locked else LoginOutcome.backoff
            member = await self._staff.by_username(username)
            return LoginResult(outcome, member, hold.until)
        member = await self._staff.by_username(username)
        try:
            matches = await self._staff.passwords.verify(
                member.password_hash if member else None, password[: MAX_PASSWORD + 1]
            )
        except Busy:
            return LoginResult(LoginOutcome.busy, member)
        if member is not None and matches and not member.disabled:
            await self.throttle.succeeded(username)
            if self._staff.passwords.needs_rehash(member.password_hash):
                with contextlib.suppress(RecordError):
                    await self._staff.rehash(member.id, member.password_hash, password)
            return LoginResult(LoginOutcome.ok, member)
        counter = await self.throttle.failed(username, address, now)
        if counter.locked_until is not None and member is not None:
            log.warning("staff account %s locked after %d failed logins", member.id,
                        counter.failures)  # fmt: skip
        outcome = LoginOutcome.disabled if matches else LoginOutcome.bad_credentials
        return LoginResult(outcome, member)
