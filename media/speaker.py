"""Who is speaking, from the sizes of the Opus packets a room's publishers send.

Nothing is decoded. Opus, as browsers and libopus send it by default, is variable-rate: it
spends bits on what it hears, so speech costs 40-150 bytes per 20 ms frame while silence
and steady room noise cost a few (and nothing at all with DTX). A publisher's bytes per
second over the last second is therefore a fair loudness, read as a ``RoomSink`` sees every
frame (a muted publisher's Producer is paused and sends its sinks nothing).

Why not the audio-level header extension (RFC 6464), which aiortc negotiates? It is more
exact, but the Worker's receive tap hands on reassembled frames without their RTP header
extensions, and reading them would mean reaching further into aiortc's internals; packet
sizes need nothing more than the frames the Producer already forwards.

Switching has hysteresis so video does not flicker between two people talking over each
other: a newcomer must be the loudest, above ``SPEAKING_BYTES_PER_S``, and louder than the
current speaker by ``LOUDER_BY`` (or the current speaker quiet) for ``HOLD_S`` in a row,
and no switch comes sooner than ``MIN_TENURE_S`` after the last.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from media.producer import Producer

TICK_S = 0.25
WINDOW_TICKS = 4  # loudness over the last second
# 16 kbit/s of Opus: speech at browsers' default rate is well above, silence far below.
SPEAKING_BYTES_PER_S = 2000.0
LOUDER_BY = 1.5
HOLD_S = 1.0
MIN_TENURE_S = 1.5


class ActiveSpeaker:
    """A RoomSink; ``order`` is participant ids, the most recent speaker first."""

    def __init__(
        self, on_change: Callable[[], None], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._on_change = on_change
        self._clock = clock
        self.order: list[str] = []
        self._audio: dict[str, str] = {}  # audio producer id -> participant id
        self._pending: dict[str, int] = {}  # bytes since the last tick, by participant
        self._windows: dict[str, deque[int]] = {}
        self._candidate: str | None = None
        self._candidate_since = 0.0
        self._switched_at = -MIN_TENURE_S
        self._timer: asyncio.TimerHandle | None = None

    @property
    def current(self) -> str | None:
        return self.order[0] if self.order else None

    # ------------------------------------------------------------ RoomSink

    def producer_opened(self, producer: Producer) -> None:
        if producer.kind == "audio":
            self._audio[producer.id] = producer.participant_id

    def producer_closed(self, producer: Producer) -> None:
        self._audio.pop(producer.id, None)

    def frame(
        self, producer: Producer, data: bytes, pts: int, time_base: Fraction, keyframe: bool
    ) -> None:
        participant = self._audio.get(producer.id)
        if participant is not None:
            self._pending[participant] = self._pending.get(participant, 0) + len(data)

    # ------------------------------------------------------------ deciding

    def forget(self, participant_id: str) -> None:
        """Someone left: no longer a speaker."""
        if participant_id in self.order:
            self.order.remove(participant_id)
        self._windows.pop(participant_id, None)
        self._pending.pop(participant_id, None)
        if self._candidate == participant_id:
            self._candidate = None

    def loudness(self, participant_id: str) -> float:
        """Bytes per second of Opus over the last second."""
        window = self._windows.get(participant_id)
        return sum(window) / (len(window) * TICK_S) if window else 0.0

    def tick(self) -> None:
        """Every TICK_S: close the window's slot and decide; calls on_change on a switch."""
        for participant in set(self._windows) | set(self._pending):
            window = self._windows.setdefault(participant, deque(maxlen=WINDOW_TICKS))
            window.append(self._pending.pop(participant, 0))
        now = self._clock()
        loud = {p: self.loudness(p) for p in self._windows}
        best = max(loud, key=lambda p: loud[p], default=None)
        current = self.current
        if (
            best is None
            or best == current
            or loud[best] < SPEAKING_BYTES_PER_S
            or (current is not None and loud[best] < LOUDER_BY * loud.get(current, 0.0))
        ):
            self._candidate = None
            return
        if self._candidate != best:
            self._candidate, self._candidate_since = best, now
        if now - self._candidate_since >= HOLD_S and now - self._switched_at >= MIN_TENURE_S:
            self._switched_at = now
            self._candidate = None
            if best in self.order:
                self.order.remove(best)
            self.order.insert(0, best)
            self._on_change()

    def start(self) -> None:
        if self._timer is None:
            # What piled up while nobody followed is no measure of who speaks now.
            self._pending.clear()
            self._windows.clear()
            self._timer = asyncio.get_running_loop().call_later(TICK_S, self._run)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _run(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(TICK_S, self._run)
        self.tick()
