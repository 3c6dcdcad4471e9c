"""Scale-out with real processes: `teleconsult serve --redis URL --workers 2` on a private
redis-server. Consultations spread over the Worker processes; a Worker killed with kill -9
is replaced and media comes back by itself, a running recording going on in a new segment."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from media.clips import Clip
from media.registry import Registry
from recordings.catalog import Catalog
from recordings.retention import Retention
from recordings.store import RecordingStore
from rooms.roles import Role
from signaling import protocol as p
from signaling.bot import Bot
from signaling.keys import load_or_create_secret
from signaling.tokens import mint
from tests.conftest import RedisServer
from tests.integration.server_process import free_port, start_server, stop_server, wait_healthy

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Cluster:
    def __init__(self, base_url: str, data_dir: Path, redis: aioredis.Redis, prefix: str) -> None:
        self.base_url = base_url
        self.data_dir = data_dir
        self.redis = redis
        self.registry = Registry(redis, prefix=prefix)
        self.secret = load_or_create_secret(data_dir)
        self.bots: list[Bot] = []

    def bot(self, consultation: str, role: Role, **media: Clip) -> Bot:
        token = mint(
            self.secret,
            consultation_id=consultation,
            kind="joint",
            identity=f"{role}-{len(self.bots)}",
            name="N",
            role=role,
            waiting_room=False,
        )
        frames: list[float] = []
        bot = Bot(self.base_url, token, on_frame=lambda kind, who, data, now: frames.append(now)
                  if kind == "video" else None, **media)  # fmt: skip
        bot.video_times = frames  # type: ignore[attr-defined]
        self.bots.append(bot)
        return bot


@pytest.fixture
async def cluster(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Cluster]:
    data_dir = tmp_path / "data"
    port = free_port()
    log = tmp_path / "serve.log"
    server = start_server(port, data_dir, "--redis", redis_server.url, "--workers", "2", log=log)
    redis = aioredis.Redis.from_url(redis_server.url)
    await redis.flushdb()  # this Redis is shared by the session's tests: start clean
    cluster = Cluster(f"http://127.0.0.1:{port}", data_dir, redis, "tc:")
    try:
        await wait_healthy(cluster.base_url, server)
        async with asyncio.timeout(30):
            while len(await cluster.registry.live_workers()) < 2:
                await asyncio.sleep(0.2)
        yield cluster
    finally:
        for bot in cluster.bots:
            await bot.close()
        stop_server(server)
        await redis.flushdb()
        await redis.aclose()
        if os.environ.get("TC_SHOW_LOG"):
            print(log.read_text())


async def test_consultations_spread_over_worker_processes(
    cluster: Cluster, video_clip: Clip, audio_clip: Clip
) -> None:
    media = {"video": video_clip, "audio": audio_clip}
    a = [cluster.bot("scale-a-1", role, **media) for role in (Role.doctor, Role.patient)]
    for bot in a:
        await bot.connect()
    assert await a[0].wait_for(lambda: a[0].frames_from(a[1].participant_id, "video") > 30, 20)
    await asyncio.sleep(1.2)  # the loaded Worker's heartbeat says so
    b = [cluster.bot("scale-b-1", role, **media) for role in (Role.doctor, Role.expert)]
    for bot in b:
        await bot.connect()
    assert await b[0].wait_for(lambda: b[0].frames_from(b[1].participant_id, "video") > 30, 20)
    placed = {await cluster.registry.placement(c) for c in ("scale-a-1", "scale-b-1")}
    assert len(placed) == 2 and None not in placed  # one consultation per Worker process


async def test_a_worker_killed_mid_call_is_replaced_within_seconds(
    cluster: Cluster, video_clip: Clip, audio_clip: Clip
) -> None:
    consultation = "scale-kill-1"
    media = {"video": video_clip, "audio": audio_clip}
    doctor = cluster.bot(consultation, Role.doctor, **media)
    patient = cluster.bot(consultation, Role.patient, **media)
    for bot in (doctor, patient):
        await bot.connect()
    assert await doctor.wait_for(
        lambda: doctor.frames_from(patient.participant_id, "video") > 30, 20
    )
    await doctor.send(p.Record(type="record", action="start"))
    assert await patient.wait_for(
        lambda: any(isinstance(e, p.ConsentRequest) for e in patient.events), 5
    )
    await patient.send(p.Consent(type="consent", granted=True))
    assert await doctor.wait_for(
        lambda: any(isinstance(e, p.RecordingState) and e.state == "recording"
                    for e in doctor.events), 5,
    )  # fmt: skip
    await asyncio.sleep(2.0)

    holder = await cluster.registry.placement(consultation)
    assert holder is not None
    pid = await cluster.registry.pid(holder)
    assert pid is not None
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    # Media comes back by itself: a media_reset, a new connection, frames again.
    before = doctor.frames_from(patient.participant_id, "video")
    ok = await doctor.wait_for(
        lambda: doctor.frames_from(patient.participant_id, "video") > before + 30, 15
    )
    assert ok
    assert doctor.media_resets == 1 and patient.media_resets == 1
    assert doctor.bye is None and patient.bye is None
    times = doctor.video_times  # type: ignore[attr-defined]
    gap = max(b - a for a, b in itertools.pairwise(times) if b > killed_at - 1)
    assert gap <= 3.0, f"video stopped for {gap:.2f} s"
    moved_to = await cluster.registry.placement(consultation)
    assert moved_to not in (None, holder)

    await asyncio.sleep(2.0)
    await doctor.send(p.Record(type="record", action="stop"))
    assert await doctor.wait_for(
        lambda: any(isinstance(e, p.RecordingState) and e.state == "stopped"
                    for e in doctor.events), 5,
    )  # fmt: skip
    store = RecordingStore(cluster.data_dir)
    async with asyncio.timeout(30):
        while True:
            infos = Catalog(store).list(consultation)
            if infos and all(i.state != "recording" for i in infos):
                break
            await asyncio.sleep(0.2)
    (info,) = infos
    manifest = Catalog(store).manifest(consultation, info.recording)
    gaps = [e for e in manifest.events if e.get("reason") == "worker_lost"]
    assert len(gaps) == 1
    lost = [t for t in manifest.tracks if t.stop_reason == "worker_lost"]
    after = [t for t in manifest.tracks if t.started_at and t.started_at > gaps[0]["at"] - 1]
    assert lost and after
    assert all(t.state == "truncated" for t in lost)
    assert any(t.state == "complete" and t.frames > 10 for t in after if t.kind == "video")
    # verify finds the lost segments truncated, and everything else whole.
    report = Retention(store).verify()
    assert {x.kind for x in report.problems} <= {"truncated"}, report.problems
