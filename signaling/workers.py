"""The media Worker processes one node starts (``serve --redis URL --workers N``).

Each is a child process (multiprocessing, spawn) running one Worker on the Redis bus, so the
node's cores all forward media. A child that dies is started again after a pause; the
consultations it held have been moved to a live Worker meanwhile (media/bus.py).
The configuration crosses as a pickled MediaConfig, never on a command line: a TURN secret
must not show in ``ps``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import time
from multiprocessing.process import BaseProcess
from pathlib import Path

from media.config import MediaConfig

log = logging.getLogger(__name__)

RESTART_AFTER_S = 1.0
# A child that keeps dying right away is not restarted in a loop.
MAX_RESTARTS_PER_MINUTE = 5
SUPERVISE_S = 0.5
STOP_TIMEOUT_S = 10.0


def _run_worker(redis_url: str, media: MediaConfig, data_dir: str, log_level: int) -> None:
    # In the child: a fresh interpreter (spawn), so imports and logging start clean.
    import signal

    from media.bus import serve_worker
    from recordings.room_recorder import RoomRecorder
    from recordings.store import RecordingStore
    from signaling.http import logsafe

    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s"
    )
    logsafe.install()
    store = RecordingStore(Path(data_dir))

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        await serve_worker(redis_url, media, recordings=RoomRecorder.factory(store))

    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        asyncio.run(run())


class WorkerPool:
    def __init__(self, count: int, redis_url: str, media: MediaConfig, data_dir: Path) -> None:
        self.count = count
        self._args = (redis_url, media, str(data_dir), logging.getLogger().getEffectiveLevel())
        self._mp = mp.get_context("spawn")
        self.processes: list[BaseProcess] = []
        self._restarts: list[float] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    def _spawn(self) -> BaseProcess:
        process = self._mp.Process(target=_run_worker, args=self._args, name="media-worker")
        process.start()
        log.info("media Worker process %s started", process.pid)
        return process

    async def start(self) -> None:
        self.processes = [self._spawn() for _ in range(self.count)]
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name="worker-pool"
        )

    async def _supervise(self) -> None:
        while not self._stopping:
            await asyncio.sleep(SUPERVISE_S)
            for i, process in enumerate(self.processes):
                if process.is_alive() or self._stopping:
                    continue
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < 60] + [now]
                log.error("media Worker process %s exited (%s)", process.pid, process.exitcode)
                if len(self._restarts) > MAX_RESTARTS_PER_MINUTE:
                    log.error("media Workers keep dying; not restarting for now")
                    continue
                await asyncio.sleep(RESTART_AFTER_S)
                if not self._stopping:
                    self.processes[i] = self._spawn()

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes:
            await asyncio.to_thread(process.join, max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
