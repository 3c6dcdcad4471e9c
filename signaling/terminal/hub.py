"""The terminals connected to this node: one bounded queue per open event stream.

A terminal keeps one Server-Sent Events stream open (signaling/terminal/api.py); the hub
hands it what happens to it (a call ringing, the call withdrawn, its revocation) and tells
the consoles when a terminal comes and goes. A ring is also kept for ``RING_S`` so a
terminal that reconnects meanwhile (a power cut, a flaky link) still rings.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

# What a stream may fall behind by before it is cut (the terminal reconnects and is
# brought up to date): nothing a terminal is sent is worth more memory than this.
QUEUE_SIZE = 16
# How long a call rings before it is withdrawn.
RING_S = 60.0
# Streams one terminal may hold open here: a terminal that reconnects before its old socket
# was noticed dead needs two; a stolen credential gets no more than this. The oldest goes.
MAX_STREAMS = 3


@dataclass
class Ring:
    call_id: str
    event: dict[str, Any]
    started: float = field(default_factory=time.monotonic)

    def live(self) -> bool:
        return time.monotonic() - self.started < RING_S


class TerminalHub:
    def __init__(self) -> None:
        # Per terminal, its streams' queues oldest first (a dict as an ordered set).
        self._streams: dict[str, dict[asyncio.Queue[dict[str, Any] | None], None]] = {}
        self._rings: dict[str, Ring] = {}

    def online(self, terminal_id: str) -> bool:
        return bool(self._streams.get(terminal_id))

    @contextlib.asynccontextmanager
    async def connect(
        self, terminal_id: str
    ) -> AsyncIterator[asyncio.Queue[dict[str, Any] | None]]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_SIZE)
        streams = self._streams.setdefault(terminal_id, {})
        while len(streams) >= MAX_STREAMS:
            oldest = next(iter(streams))
            del streams[oldest]
            self._cut(oldest)
        streams[queue] = None
        ring = self._rings.get(terminal_id)
        if ring is not None and ring.live():
            queue.put_nowait(ring.event)
        try:
            yield queue
        finally:
            streams = self._streams.get(terminal_id)
            if streams is not None:
                streams.pop(queue, None)
                if not streams:
                    del self._streams[terminal_id]

    def send(self, terminal_id: str, event: dict[str, Any]) -> int:
        """Hand ``event`` to every stream of the terminal; a stream that is full is cut."""
        sent = 0
        for queue in list(self._streams.get(terminal_id, ())):
            try:
                queue.put_nowait(event)
                sent += 1
            except asyncio.QueueFull:
                self._cut(queue)
        return sent

    def ring(self, terminal_id: str, call_id: str, event: dict[str, Any]) -> int:
        self._rings[terminal_id] = Ring(call_id, event)
        return self.send(terminal_id, event)

    def ringing(self, terminal_id: str, call_id: str) -> bool:
        ring = self._rings.get(terminal_id)
        return ring is not None and ring.call_id == call_id and ring.live()

    def stop_ringing(self, terminal_id: str, call_id: str | None = None) -> None:
        ring = self._rings.get(terminal_id)
        if ring is not None and (call_id is None or ring.call_id == call_id):
            del self._rings[terminal_id]

    def disconnect(self, terminal_id: str, event: dict[str, Any]) -> None:
        """Send ``event`` last and end every stream of the terminal (it was revoked)."""
        self.stop_ringing(terminal_id)
        for queue in list(self._streams.get(terminal_id, ())):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)
            self._cut(queue)

    def close_all(self) -> None:
        for streams in list(self._streams.values()):
            for queue in list(streams):
                self._cut(queue)

    @staticmethod
    def _cut(queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        # The stream's reader ends at None; make room for it if it must.
        while True:
            try:
                queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
