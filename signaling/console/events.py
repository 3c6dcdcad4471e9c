"""Change notices for the staff consoles, and the Server-Sent Events stream that carries them.

A console that changes something publishes a ``Change`` (what kind of record, which sites it
concerns); every open console that may see one of those sites gets a ``changed`` event and
refetches what it shows. Notices carry topics and opaque site ids only, never content, so
the page then reads through the same permission checks as any request.

``ConsoleEvents`` is the seam: ``InMemoryConsoleEvents`` serves one process; several
signaling nodes will need one over Redis pub/sub behind the same two methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
# A write that a client does not take within this is a client gone: the stream ends.
SEND_TIMEOUT_S = 5.0
# A console that does not read its stream is dropped past this many notices (its browser
# reconnects and refetches anyway).
QUEUE_LIMIT = 64


@dataclass(frozen=True)
class Change:
    # "sites", "departments", "staff", "partnerships", "api_tokens"
    topic: str
    # The sites whose consoles show this change; empty for the platform only.
    site_ids: frozenset[str]

    def as_json(self) -> str:
        return json.dumps({"topic": self.topic, "sites": sorted(self.site_ids)})


class ConsoleEvents(Protocol):
    def publish(self, change: Change) -> None: ...

    def subscribe(
        self, may_see: Callable[[Change], bool]
    ) -> contextlib.AbstractAsyncContextManager[asyncio.Queue[Change | None]]: ...

    async def close(self) -> None: ...


class InMemoryConsoleEvents:
    """Fan-out within one process: one bounded queue per open console."""

    def __init__(self) -> None:
        self._subscribers: dict[asyncio.Queue[Change | None], Callable[[Change], bool]] = {}

    def publish(self, change: Change) -> None:
        for queue, may_see in list(self._subscribers.items()):
            if not may_see(change):
                continue
            try:
                queue.put_nowait(change)
            except asyncio.QueueFull:
                self._drop(queue)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, may_see: Callable[[Change], bool]
    ) -> AsyncIterator[asyncio.Queue[Change | None]]:
        queue: asyncio.Queue[Change | None] = asyncio.Queue(QUEUE_LIMIT)
        self._subscribers[queue] = may_see
        try:
            yield queue
        finally:
            self._subscribers.pop(queue, None)

    async def close(self) -> None:
        for queue in list(self._subscribers):
            self._drop(queue)

    def _drop(self, queue: asyncio.Queue[Change | None]) -> None:
        self._subscribers.pop(queue, None)
        # None ends the stream; make room for it if the queue is full.
        with contextlib.suppress(asyncio.QueueEmpty):
            while queue.full():
                queue.get_nowait()
        queue.put_nowait(None)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


async def stream(
    request: web.Request,
    events: ConsoleEvents,
    may_see: Callable[[Change], bool],
    still_valid: Callable[[], Awaitable[bool]],
) -> web.StreamResponse:
    """Serve notices as Server-Sent Events until the session ends or the client goes."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    async with events.subscribe(may_see) as queue:
        try:
            await _send(response, b"retry: 2000\n: connected\n\n")
            while True:
                try:
                    change = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    # Each keep-alive also re-checks the session: a logout or a disabled
                    # account ends the stream within one interval.
                    if not await still_valid():
                        break
                    await _send(response, b": keep-alive\n\n")
                    continue
                if change is None:
                    break
                await _send(response, f"event: changed\ndata: {change.as_json()}\n\n".encode())
        except (ConnectionError, TimeoutError):
            return response
    with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
        await asyncio.wait_for(response.write_eof(), SEND_TIMEOUT_S)
    return response


async def _send(response: web.StreamResponse, data: bytes) -> None:
    await asyncio.wait_for(response.write(data), SEND_TIMEOUT_S)
