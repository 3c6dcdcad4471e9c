"""Password hashing with Argon2id (argon2-cffi), off the event loop and rationed.

A hash costs tens of milliseconds of CPU and tens of MiB of memory by design, so it runs in a
thread (``asyncio.to_thread``) and at most ``concurrency`` at a time: a flood of logins
queues here instead of taking every core from the media Worker. At most ``max_waiting`` may
queue; beyond that a login is refused at once (``Busy``) rather than holding memory for an
attacker. A login for a username that does not exist verifies against a dummy hash, so it
costs what a real one costs and timing does not tell which usernames exist.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from rooms.records.errors import InvalidInput, RecordError

MIN_PASSWORD = 10
# Argon2 reads the whole input; a bound keeps a megabyte "password" from being work.
MAX_PASSWORD = 256


class Busy(RecordError):
    """Too many password checks are waiting already."""

    code = "busy"


def validate_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"the password must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"the password must be at most {MAX_PASSWORD} characters")
    if len(set(password)) < 4:
        raise InvalidInput("the password must have at least 4 different characters")
    return password


def random_password() -> str:
    """A password to hand out once (the first admin): 20 URL-safe characters, ~120 bits."""
    return secrets.token_urlsafe(15)


class Passwords:
    def __init__(
        self,
        *,
        time_cost: int = 3,
        memory_cost_kib: int = 64 * 1024,
        parallelism: int = 1,
        concurrency: int = 2,
        max_waiting: int = 64,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=parallelism
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._max_waiting = max_waiting
        self._waiting = 0
        # Made (in a thread, on first need) with the same parameters, so verifying against
        # it costs a real verification; not at start-up, which every process pays.
        self._dummy: str | None = None

    @classmethod
    def for_tests(cls) -> Passwords:
        """The cheapest Argon2id there is: tests hash many passwords on two shared cores."""
        return cls(time_cost=1, memory_cost_kib=8, parallelism=1)

    async def hash(self, password: str) -> str:
        validate_password(password)
        return await self._run(self._hasher.hash, password)

    async def verify(self, hashed: str | None, password: str) -> bool:
        """Whether ``password`` matches ``hashed``; with None, a dummy check of equal cost."""
        if len(password) > MAX_PASSWORD:
            # No stored password is this long; still spend what a check costs.
            hashed, password = None, password[:MAX_PASSWORD]
        return await self._run(self._verify, hashed, password)

    def needs_rehash(self, hashed: str) -> bool:
        return self._hasher.check_needs_rehash(hashed)

    def _verify(self, hashed: str | None, password: str) -> bool:
        if hashed is None and self._dummy is None:
            self._dummy = self._hasher.hash(secrets.token_hex(16))
        try:
            ok = self._hasher.verify(hashed or self._dummy or "", password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        return ok and hashed is not None

    async def _run(self, fn: Callable[..., Any], *args: object) -> Any:
        if self._waiting >= self._max_waiting:
            raise Busy("too many logins at once")
        self._waiting += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(fn, *args)
        finally:
            self._waiting -= 1
