"""The node's side of call quality: the Workers' samples (``WorkerEvents.quality``), with the
role of each participant added by their Room, buffered and written to the records in
batches (rooms/records/quality.py).

Writes leave the event loop (the records database is async: aiosqlite's thread or asyncpg)
and never hold up an event: ``add`` only appends to a bounded buffer, and a task writes it
every few seconds. Quality is worth less than the call: when the database cannot keep up,
the oldest samples are dropped (logged once per episode), never the media.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from datetime import UTC, datetime

from media.client import QualitySample
from rooms.records.quality import CallQuality, QualityRow

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 5.0
# Rows waiting for the database: a few minutes of a busy node.
MAX_BUFFERED = 20_000


class QualityLog:
    def __init__(
        self,
        repository: CallQuality,
        *,
        flush_every_s: float = FLUSH_EVERY_S,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        self._repository = repository
        self._every = flush_every_s
        self._buffer: collections.deque[tuple[str, QualityRow]] = collections.deque(
            maxlen=max_buffered
        )
        self._task: asyncio.Task[None] | None = None
        self._dropping = False
        self.dropped = 0
        self.written = 0

    def add(self, consultation_id: str, samples: list[tuple[QualitySample, str]]) -> None:
        """Samples with their participant's role; written by the next flush."""
        for sample, role in samples:
            if len(self._buffer) == self._buffer.maxlen:
                self.dropped += 1
                if not self._dropping:
                    self._dropping = True
                    log.warning("call quality: the records database is behind; dropping")
            self._buffer.append((consultation_id, _row(sample, role)))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="quality-writer")

    async def close(self) -> None:
        """Stop the task and write what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def flush(self) -> int:
        """Write what is buffered now; the number of rows kept."""
        if not self._buffer:
            return 0
        taken = list(self._buffer)
        self._buffer.clear()
        self._dropping = False
        batches: dict[str, list[QualityRow]] = {}
        for consultation_id, row in taken:
            batches.setdefault(consultation_id, []).append(row)
        try:
            kept = await self._repository.add(batches)
        except Exception as exc:
            # Lost rather than retried for ever: the next batch may well succeed.
            log.warning("call quality: %d samples not written: %s", len(taken), type(exc).__name__)
            return 0
        self.written += kept
        return kept

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            await self.flush()


def _row(sample: QualitySample, role: str) -> QualityRow:
    return QualityRow(
        participant_id=sample.participant_id,
        role=role,
        at=datetime.fromtimestamp(sample.at, UTC),
        interval_s=sample.interval_s,
        loss_in=sample.loss_in,
        loss_out=sample.loss_out,
        rtt_ms=sample.rtt_ms,
        fps_in=sample.fps_in,
        fps_out=sample.fps_out,
        kbps_in=sample.kbps_in,
        kbps_out=sample.kbps_out,
    )
