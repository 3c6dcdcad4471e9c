"""The webhook sender: events from the stream into the outbox, and from the outbox out.

``publish`` (an EventStream subscriber, called on the loop that may forward media) only
queues. A writer task puts what has queued into the outbox in one transaction, one row per
endpoint. A sender task posts due rows, at most ``concurrency`` at once, each signed
(signaling/webhooks/signing.py) and with the audit log's head as it stands when sent; a 2xx
marks the row delivered, anything else (a status, a timeout, a refused connection, a
redirect: we never follow one) schedules the next attempt after a back-off that doubles
from a second up to ``retry_max_s``, with jitter, until the row is older than
``give_up_days``: then it is dead, logged at ERROR, listed by ``teleconsult webhooks status``.

Order: the outbox hands out only the oldest pending row of each (endpoint, consultation), so
an endpoint sees a consultation's events in the order they happened. At least once: a row
posted just before a crash is posted again; receivers dedupe by the event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import aiohttp

from rooms.records.database import Database
from rooms.records.webhook_outbox import Delivery, OutboxEvent, WebhookOutbox
from signaling.events import BaseEvent
from signaling.webhooks import signing
from signaling.webhooks.settings import WebhookEndpoint, WebhookSettings

log = logging.getLogger(__name__)

# The sender looks for due rows at least this often (and at once when something is queued
# or delivered): rows of other nodes, and retries coming due.
POLL_S = 1.0
RETRY_FIRST_S = 1.0
# A claim outlives one attempt by this much; a sender that dies holding one frees it then.
CLAIM_MARGIN_S = 5.0
# Published events waiting for the writer. Far above any real rate (joins and leaves); a
# database that stops taking writes must not grow memory without end.
MAX_QUEUED = 10_000
KEEP_DELIVERED = timedelta(days=7)
PURGE_EVERY_S = 3600.0
USER_AGENT = "teleconsult-webhooks/1"


def _now() -> datetime:
    return datetime.now(UTC)


def backoff_s(attempts: int, cap_s: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds before attempt ``attempts + 1``: doubling from a second, capped, and between
    half and all of that so that many rows failing together do not retry together."""
    delay = min(cap_s, RETRY_FIRST_S * 2 ** max(0, attempts - 1))
    return delay * (0.5 + 0.5 * rand())


class Webhooks:
    def __init__(
        self,
        settings: WebhookSettings,
        database: Database,
        audit_head: Callable[[], tuple[int, str]],
        *,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.settings = settings
        self.outbox = WebhookOutbox(database)
        self._endpoints: dict[str, WebhookEndpoint] = {e.key: e for e in settings.endpoints}
        self._audit_head = audit_head
        self._clock = clock
        self._queued: list[OutboxEvent] = []
        self._queued_event = asyncio.Event()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self._dropped = 0

    # ------------------------------------------------------------ the stream's side

    def publish(self, event: BaseEvent) -> None:
        """An EventStream subscriber: queue it, nothing more (no I/O here)."""
        if len(self._queued) >= MAX_QUEUED:
            self._dropped += 1
            if self._dropped in (1, 100) or self._dropped % 1000 == 0:
                log.error(
                    "webhooks: the outbox is not taking writes; %d events lost", self._dropped
                )
            return
        self._queued.append(
            OutboxEvent(
                event_id=event.id,
                consultation_id=event.consultation,
                event_type=getattr(event, "type", "event"),
                body=event.model_dump_json(),
            )
        )
        self._queued_event.set()

    # ------------------------------------------------------------ life

    async def start(self) -> None:
        abandoned = await self.outbox.abandon_endpoints_except(self._endpoints)
        if abandoned:
            log.warning(
                "webhooks: %d pending deliveries were for endpoints no longer configured; "
                "marked dead (teleconsult webhooks status)",
                abandoned,
            )
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.settings.concurrency),
            headers={"User-Agent": USER_AGENT},
        )
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._write_loop(), name="webhook-outbox-writer"),
            loop.create_task(self._send_loop(), name="webhook-sender"),
        ]
        log.info("webhooks: sending to %d endpoint(s)", len(self._endpoints))

    async def close(self) -> None:
        """Write what is queued (nothing published is lost on a clean stop), let posts in
        flight finish within their timeout, then stop."""
        writer, sender = self._tasks or (None, None)
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=self.settings.timeout_s)
            for task in self._in_flight:
                task.cancel()
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        with contextlib.suppress(Exception):
            await self._write_queued()
        if self._queued:
            log.error("webhooks: %d events could not be written at shutdown", len(self._queued))
        if self._http is not None:
            await self._http.close()

    # ------------------------------------------------------------ the writer

    async def _write_loop(self) -> None:
        while True:
            await self._queued_event.wait()
            self._queued_event.clear()
            try:
                await self._write_queued()
            except Exception:
                # Kept in memory and tried again: the database may be back in a moment.
                log.exception("webhooks: writing %d events to the outbox failed", len(self._queued))
                await asyncio.sleep(1.0)
                self._queued_event.set()

    async def _write_queued(self) -> None:
        batch = self._queued[:]
        if not batch:
            return
        settings = self.settings
        await self.outbox.add(
            batch,
            list(self._endpoints),
            now=self._clock(),
            give_up_after=timedelta(days=settings.give_up_days),
        )
        # Only now: a failed write leaves them queued, in order, for the next try.
        del self._queued[: len(batch)]
        self._wake.set()

    # ------------------------------------------------------------ the sender

    async def _send_loop(self) -> None:
        last_purge = 0.0
        while True:
            try:
                await self._send_due()
                if time.monotonic() - last_purge > PURGE_EVERY_S:
                    last_purge = time.monotonic()
                    await self.outbox.purge_delivered(self._clock() - KEEP_DELIVERED)
            except Exception:
                log.exception("webhooks: looking for due deliveries failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            self._wake.clear()

    async def _send_due(self) -> None:
        claim_s = self.settings.timeout_s + CLAIM_MARGIN_S
        for delivery in await self.outbox.due(self._clock(), limit=4 * self.settings.concurrency):
            endpoint = self._endpoints.get(delivery.endpoint)
            if endpoint is None:
                continue
            await self._slots.acquire()
            now = self._clock()
            try:
                claimed = await self.outbox.claim(
                    delivery.id, now=now, until=now + timedelta(seconds=claim_s)
                )
            except BaseException:
                self._slots.release()
                raise
            if not claimed:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._deliver(endpoint, delivery))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()
        # The consultation's next event may go now.
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("webhooks: a delivery failed unexpectedly: %r", task.exception())

    async def _deliver(self, endpoint: WebhookEndpoint, delivery: Delivery) -> None:
        error = await self._post(endpoint, delivery)
        now = self._clock()
        if error is None:
            await self.outbox.delivered(delivery.id, now=now)
            return
        if now >= delivery.give_up_at:
            await self.outbox.dead(delivery.id, error)
            log.error(
                "webhooks: gave up on event %s (%s) to %s (%s) after %d attempts: %s",
                delivery.event_id,
                delivery.event_type,
                endpoint.host,
                endpoint.key,
                delivery.attempts + 1,
                error,
            )
            return
        delay = backoff_s(delivery.attempts + 1, self.settings.retry_max_s)
        await self.outbox.failed(delivery.id, error, next_attempt_at=now + timedelta(seconds=delay))
        log.warning(
            "webhooks: event %s to %s (%s) failed (%s), attempt %d; next in %.1f s",
            delivery.event_id,
            endpoint.host,
            endpoint.key,
            error,
            delivery.attempts + 1,
            delay,
        )

    async def _post(self, endpoint: WebhookEndpoint, delivery: Delivery) -> str | None:
        """None when the receiver took it (2xx), else what went wrong, as a short code."""
        assert self._http is not None
        body = delivery.body.encode()
        timestamp = int(self._clock().timestamp())
        seq, mac = self._audit_head()
        headers = {
            "Content-Type": "application/json",
            signing.TIMESTAMP: str(timestamp),
            signing.SIGNATURE: signing.signature(endpoint.secret, timestamp, body),
            signing.EVENT_ID: delivery.event_id,
            signing.EVENT_TYPE: delivery.event_type,
            signing.AUDIT_HEAD: f"{seq}:{mac}",
        }
        try:
            async with self._http.post(
                endpoint.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
            ) as response:
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return type(exc).__name__
