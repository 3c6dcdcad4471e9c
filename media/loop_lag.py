"""How late the Worker's event loop runs: a timer every ``interval`` notes how long after
its due time it fired. Everything a Worker forwards waits behind whatever holds the loop
(a slow callback, the GIL held by a thread, CPU starvation), so this is the first number
to look at when calls stutter.
"""

from __future__ import annotations

import asyncio

from media.client import Histogram
from media.meter import LOOP_LAG_BOUNDS, Buckets

INTERVAL_S = 0.25


class LoopLag:
    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self._interval = interval_s
        self._buckets = Buckets(LOOP_LAG_BOUNDS)
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0

    @property
    def running(self) -> bool:
        return self._timer is not None

    def start(self) -> None:
        """Idempotent; on the running loop."""
        if self._timer is None:
            self._schedule(asyncio.get_running_loop())

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def snapshot(self) -> Histogram:
        return self._buckets.snapshot()

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = loop.time() + self._interval
        self._timer = loop.call_at(self._due, self._fired, loop)

    def _fired(self, loop: asyncio.AbstractEventLoop) -> None:
        self._buckets.observe(max(0.0, loop.time() - self._due))
        self._schedule(loop)
