"""Compose jobs for the API: one composer process per recording, a few for the whole server.

Composing decodes and encodes, so each job is a process of its own (multiprocessing, spawn),
never work on the event loop that forwards media. Every process is a core kept busy for a
while, and anyone with a doctor's token can ask, so:

- a recording has at most one job at a time: asking again returns the running (or done) job;
- at most ``limit`` processes run at once for the whole server (default: all cores but
  one, which the Worker keeps); beyond it the caller is refused with a time to come back;
- a failed job may be retried, after a back-off that doubles with each failure in a row
  (10 s up to 5 min), so a recording that cannot be composed is not retried in a loop.

A job's end is seen through its process's sentinel on the event loop, which also reaps the
process at once.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

log = logging.getLogger(__name__)

# When the server is at its limit: a short recording composes in well under this.
BUSY_RETRY_S = 10.0
BACKOFF_FIRST_S = 10.0
BACKOFF_MAX_S = 300.0
_STOP_WAIT_S = 5.0


def default_limit() -> int:
    return max(1, (os.cpu_count() or 1) - 1)


class ComposeRefused(Exception):
    """Not now: ``retry_after_s`` says when. The message names no path and no person."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class ComposeJob:
    # Failed attempts in a row for this recording, this one included once it has failed.
    failures: int = 0
    process: BaseProcess | None = None  # None while it is being started
    shared_progress: Synchronized | None = None  # type: ignore[type-arg]
    ended_at: float | None = None
    exitcode: int | None = None

    @property
    def state(self) -> str:
        if self.ended_at is None:
            return "running"
        return "done" if self.exitcode == 0 else "failed"

    @property
    def progress(self) -> float:
        return float(self.shared_progress.value) if self.shared_progress is not None else 0.0


def _compose_in_child(
    data_dir: str,
    consultation: str,
    recording: str,
    progress: Synchronized,  # type: ignore[type-arg]
) -> None:
    from recordings.composer import compose
    from recordings.store import RecordingStore

    def report(fraction: float) -> None:
        progress.value = fraction

    try:
        compose(RecordingStore(Path(data_dir)), consultation, recording, progress=report)
        progress.value = 1.0
    except Exception:
        logging.getLogger(__name__).exception("composing %s failed", recording)
        raise SystemExit(1) from None


class Composers:
    def __init__(
        self,
        data_dir: Path,
        limit: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_composed: Callable[[str, str], None] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("the composer limit must be at least 1")
        self.data_dir = data_dir
        self.limit = limit
        self.jobs: dict[tuple[str, str], ComposeJob] = {}
        self._clock = clock
        # (consultation, recording) of each job that succeeded: a composed video exists.
        self._on_composed = on_composed
        self._mp = mp.get_context("spawn")

    def get(self, consultation: str, recording: str) -> ComposeJob | None:
        return self.jobs.get((consultation, recording))

    def running(self) -> int:
        return sum(1 for job in self.jobs.values() if job.ended_at is None)

    async def start(self, consultation: str, recording: str) -> tuple[ComposeJob, bool]:
        """(the recording's job, whether it was started now), or ComposeRefused."""
        key = (consultation, recording)
        job = self.jobs.get(key)
        failures = 0
        if job is not None:
            if job.state != "failed":
                return job, False
            assert job.ended_at is not None
            wait = job.ended_at + _backoff(job.failures) - self._clock()
            if wait > 0:
                raise ComposeRefused("composing this recording failed; try again later", wait)
            failures = job.failures
        if self.running() >= self.limit:
            raise ComposeRefused(
                "the server is composing all it can; try again later", BUSY_RETRY_S
            )
        # Counted as running from here: requests arriving while it starts see it.
        job = self.jobs[key] = ComposeJob(failures=failures)
        # Shielded: a process that is started must be watched even if the caller goes.
        await asyncio.shield(self._launch(job, consultation, recording))
        return job, True

    async def _launch(self, job: ComposeJob, consultation: str, recording: str) -> None:
        try:
            # Starting a process (and its shared memory) is blocking work.
            job.shared_progress, job.process = await asyncio.to_thread(
                self._spawn, consultation, recording
            )
        except BaseException:
            self._ended(job, exitcode=-1)
            raise
        loop = asyncio.get_running_loop()
        loop.add_reader(job.process.sentinel, self._reap, job, consultation, recording)

    def _spawn(self, consultation: str, recording: str) -> tuple[Synchronized, BaseProcess]:  # type: ignore[type-arg]
        progress = self._mp.Value("d", 0.0)
        process = self._mp.Process(
            target=_compose_in_child,
            args=(str(self.data_dir), consultation, recording, progress),
            daemon=True,
        )
        process.start()
        return progress, process

    def _reap(self, job: ComposeJob, consultation: str, recording: str) -> None:
        assert job.process is not None
        asyncio.get_running_loop().remove_reader(job.process.sentinel)
        job.process.join()  # at once: the sentinel says it has exited
        self._ended(job, exitcode=job.process.exitcode)
        job.process.close()
        if job.exitcode == 0 and self._on_composed is not None:
            self._on_composed(consultation, recording)

    def _ended(self, job: ComposeJob, *, exitcode: int | None) -> None:
        job.ended_at, job.exitcode = self._clock(), exitcode
        job.failures = 0 if exitcode == 0 else job.failures + 1

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        running = [j for j in self.jobs.values() if j.ended_at is None and j.process is not None]
        for job in running:
            assert job.process is not None
            loop.remove_reader(job.process.sentinel)
            job.process.terminate()
        for job in running:
            assert job.process is not None
            await asyncio.to_thread(job.process.join, _STOP_WAIT_S)
            if job.process.exitcode is None:
                job.process.kill()
                await asyncio.to_thread(job.process.join, _STOP_WAIT_S)


def _backoff(failures: int) -> float:
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, failures - 1))
