"""Compose requests cannot fork-bomb the server: real composer processes, counted live."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import aiohttp

from recordings.bench import record_synthetic_call
from recordings.recorder import Recorder
from recordings.store import RecordingStore
from rooms.roles import Role
from signaling.config import ServerConfig
from signaling.http.composing import BACKOFF_FIRST_S
from tests.integration.conftest import Harness, running

LIMIT = 2


class LiveComposers:
    """Samples, in a thread, how many composer processes this process has running."""

    def __init__(self) -> None:
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LiveComposers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, live_composers())
            time.sleep(0.005)


def live_composers() -> int:
    """Children of this process running multiprocessing's spawn entry point, zombies aside."""
    me, count = os.getpid(), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == me and state != "Z" and b"spawn_main" in cmdline:
            count += 1
    return count


def _failing_recording(store: RecordingStore, consultation: str) -> str:
    """A recording nobody was in: composing it fails at once (no frames)."""
    recorder = Recorder(store, consultation)
    recorder.start({})
    recorder.stop()
    return recorder.recording


def _url(harness: Harness, consultation: str, recording: str) -> str:
    return f"{harness.base_url}/api/consultations/{consultation}/recordings/{recording}/compose"


async def _post(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, str | None]:
    async with http.post(url, headers={"Authorization": f"Bearer {token}"}) as r:
        await r.read()
        return r.status, r.headers.get("Retry-After")


async def _job(http: aiohttp.ClientSession, url: str, token: str) -> dict:
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        return await r.json()


async def _until_ended(http: aiohttp.ClientSession, url: str, token: str) -> str:
    async with asyncio.timeout(120):
        while (job := await _job(http, url, token))["state"] == "running":
            await asyncio.sleep(0.2)
    return job["state"]


async def test_a_burst_of_compose_requests_never_runs_more_than_the_limit(
    config: ServerConfig, consultation: str
) -> None:
    async with running(replace(config, max_composers=LIMIT)) as harness:
        store = harness.server.recording_store
        recordings = [
            record_synthetic_call(store, consultation, seconds=2.0)[0].recording for _ in range(4)
        ]
        recordings.append(_failing_recording(store, consultation))
        token = harness.token(consultation, Role.doctor)
        urls = [_url(harness, consultation, r) for r in recordings]
        with LiveComposers() as live:
            async with aiohttp.ClientSession() as http:
                answers = await asyncio.gather(
                    *(_post(http, urls[i % len(urls)], token) for i in range(200))
                )
                started = [u for u in urls if await _job_or_none(http, u, token)]
                # A few more rounds while the first jobs end: a failed job is not restarted
                # in a loop, and the limit holds as slots free up.
                for _ in range(3):
                    answers += await asyncio.gather(*(_post(http, u, token) for u in urls))
                    for url in urls:
                        if await _job_or_none(http, url, token):
                            await _until_ended(http, url, token)
        audit = [e for e in harness.server.audit.entries() if e["action"] == "recording_compose"]

    assert live.most <= LIMIT, f"{live.most} composer processes ran at once"
    assert live.most >= 1
    assert {status for status, _ in answers} == {202, 429}
    for status, retry_after in answers:
        if status == 429:
            assert retry_after is not None and int(retry_after) >= 1
    # The burst started the limit, plus one more if the failing job (it fails at once) ended
    # and freed its slot while the burst was still arriving; never more at once (live.most).
    assert LIMIT <= len(started) <= LIMIT + 1
    # Each start is audited once; repeats of a running job start nothing.
    assert len(audit) <= LIMIT + 3 * LIMIT


async def _job_or_none(http: aiohttp.ClientSession, url: str, token: str) -> dict | None:
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
        return await r.json() if r.status == 200 else None


async def test_a_failed_compose_is_retried_only_after_a_back_off(
    config: ServerConfig, consultation: str
) -> None:
    async with running(config) as harness:
        recording = _failing_recording(harness.server.recording_store, consultation)
        token = harness.token(consultation, Role.doctor)
        url = _url(harness, consultation, recording)
        async with aiohttp.ClientSession() as http:
            assert (await _post(http, url, token))[0] == 202
            assert await _until_ended(http, url, token) == "failed"
            # Straight away, and in a tight loop: refused, nothing started.
            again = [await _post(http, url, token) for _ in range(50)]
            assert {status for status, _ in again} == {429}
            first_wait = int(again[0][1] or 0)
            assert 1 <= first_wait <= BACKOFF_FIRST_S
            assert live_composers() == 0
            # After the back-off it may be tried again; failing again doubles the wait.
            await asyncio.sleep(first_wait + 0.5)
            assert (await _post(http, url, token))[0] == 202
            assert await _until_ended(http, url, token) == "failed"
            status, retry_after = await _post(http, url, token)
            assert status == 429 and int(retry_after or 0) > BACKOFF_FIRST_S
        starts = [e for e in harness.server.audit.entries() if e["action"] == "recording_compose"]
        assert len(starts) == 2
