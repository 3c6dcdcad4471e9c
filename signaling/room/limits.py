"""Per-connection budgets: what one signaling socket may cost the server before it is cut.

A hostile client with a valid token must not be able to make the server work for it beyond
what an honest browser needs. Three budgets, each a leaky bucket:

* messages: 50/s with a burst of 100 (a browser sends a few a second, its ICE candidates in
  one burst at the start). A message over budget is refused with ``rate_limited``.
* bytes: 64 KiB/s with a burst of 512 KiB (an SDP answer is a few KiB, a large one 30 KiB).
  Bytes are spent on arrival, whether the message is accepted or not: aiohttp has already
  unmasked and decoded them. Over budget the socket is cut.
* strikes: every refused message adds one; they drain at 10/s. Past 500 the socket is cut.
  A burst of a few hundred messages is refused and forgiven; a client sending at 5,000 msg/s
  is cut within about 0.1 s, one at twice the allowed rate within about 12 s.

Counting happens before parsing, so a flood of garbage costs a length check per frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

MESSAGES_PER_S = 50.0
MESSAGE_BURST = 100.0
BYTES_PER_S = 64.0 * 1024
BYTE_BURST = 512.0 * 1024
MAX_STRIKES = 500.0
STRIKES_FORGIVEN_PER_S = 10.0


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full."""

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self, amount: float = 1.0) -> bool:
        """Spend ``amount`` if there is that much; otherwise spend nothing."""
        self._refill()
        if self._tokens < amount:
            return False
        self._tokens -= amount
        return True

    def spend(self, amount: float) -> bool:
        """Spend ``amount`` whatever the balance (it may go negative); False once overdrawn."""
        self._refill()
        self._tokens -= amount
        return self._tokens >= 0


class Verdict(Enum):
    accept = "accept"
    # Over the message rate: answer rate_limited (once per run) and drop the message.
    refuse = "refuse"
    # Past the byte budget or the strike limit: the client is hostile, end the socket.
    cut = "cut"


class ConnectionBudget:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.messages = TokenBucket(MESSAGES_PER_S, MESSAGE_BURST, clock=clock)
        self.bytes = TokenBucket(BYTES_PER_S, BYTE_BURST, clock=clock)
        # Strikes as a bucket: its burst is how many may pile up before the cut.
        self.strikes = TokenBucket(STRIKES_FORGIVEN_PER_S, MAX_STRIKES, clock=clock)
        self.refusals_in_a_row = 0

    def admit(self, size_bytes: int) -> Verdict:
        if not self.bytes.spend(size_bytes):
            return Verdict.cut
        if self.messages.take():
            self.refusals_in_a_row = 0
            return Verdict.accept
        self.refusals_in_a_row += 1
        if not self.strikes.spend(1.0):
            return Verdict.cut
        return Verdict.refuse
