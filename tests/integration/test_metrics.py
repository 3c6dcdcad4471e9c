"""``/metrics`` scraped during real calls (bots through the real protocol and Worker) and
parsed with prometheus-client's own parser: the series a call implies, counters that rise,
the join histogram, no identity or name anywhere; the same with the Worker on the Redis bus;
and who may scrape (loopback only by default, a bearer token when one is configured)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from media.bus import WorkerServer
from media.clips import Clip
from media.config import MediaConfig
from rooms.consultation import new_consultation_id
from rooms.roles import Role
from signaling import protocol as p
from signaling.app import create_app
from signaling.bot import Bot
from signaling.config import ServerConfig
from tests.conftest import RedisServer
from tests.integration.conftest import Harness, running

NAMES = {
    Role.doctor: "Dr. Wang Wei 王伟",
    Role.patient: "Zhao Xiaoming 赵小明",
    Role.observer: "Li Na",
}
# Every label value a scrape may hold besides Worker ids: kinds, directions, roles,
# recording failure reasons, bucket bounds.
ALLOWED_LABELS = {"audio", "video", "inbound", "outbound", *(r.value for r in Role)}
ALLOWED_LABELS |= {"start_failed", "disk_full", "error"}


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(
        data_dir=tmp_path,
        secret=secrets.token_bytes(32),
        # Quality samples (and with them the round-trip histogram) every second.
        media=MediaConfig(answer_timeout_s=5.0, quality_interval_s=1.0),
    )


async def scrape(base_url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(base_url + "/metrics", headers=headers) as resp:
            return resp.status, await resp.text()


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.families: dict[str, Metric] = {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, sample: str, **labels: str) -> float:
        found = [
            s.value
            for family in self.families.values()
            for s in family.samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(found) == 1, (sample, labels, found)
        return found[0]

    def labels(self) -> set[str]:
        return {v for f in self.families.values() for s in f.samples for v in s.labels.values()}


async def _call(harness: Harness, consultation: str, clip: Clip, audio: Clip) -> list[Bot]:
    doctor = harness.bot(
        harness.token(consultation, Role.doctor, name=NAMES[Role.doctor]), video=clip, audio=audio
    )
    patient = harness.bot(
        harness.token(consultation, Role.patient, name=NAMES[Role.patient]), video=clip, audio=audio
    )
    observer = harness.bot(harness.token(consultation, Role.observer, name=NAMES[Role.observer]))
    bots = [doctor, patient, observer]
    await asyncio.gather(*(b.connect() for b in bots))

    def everyone_receives() -> bool:
        return all(
            bot.frames_from(other.participant_id, kind) >= 20  # type: ignore[arg-type]
            for bot in bots
            for other in (doctor, patient)
            if other is not bot
            for kind in ("video", "audio")
        )

    assert await doctor.wait_for(everyone_receives, 20)
    return bots


async def _until(check: object, timeout: float, base_url: str) -> Scrape:
    """Scrape until ``check(scrape)`` holds (bounded); the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        status, text = await scrape(base_url)
        assert status == 200, text
        result = Scrape(text)
        if check(result) or time.monotonic() > deadline:  # type: ignore[operator]
            return result
        await asyncio.sleep(0.3)


async def _assert_a_call_shows(harness: Harness, bots: list[Bot], worker: str) -> None:
    w = {"worker": worker}
    first = await _until(
        lambda s: (
            s.value("teleconsult_media_round_trip_seconds_count", **w) > 0
            and s.value("teleconsult_join_seconds_count") == 3
        ),
        15,
        harness.base_url,
    )
    assert first.families["teleconsult_media_bytes"].type == "counter"
    assert first.families["teleconsult_join_seconds"].type == "histogram"
    # The node's calls.
    assert first.value("teleconsult_rooms") == 1
    assert first.value("teleconsult_participants", role="doctor") == 1
    assert first.value("teleconsult_participants", role="patient") == 1
    assert first.value("teleconsult_participants", role="observer") == 1
    assert first.value("teleconsult_participants", role="expert") == 0
    assert first.value("teleconsult_waiting_participants") == 0
    assert first.value("teleconsult_join_seconds_count") == 3
    assert 0 < first.value("teleconsult_join_seconds_sum") < 3 * 20
    # The Worker's media: two publishers of both kinds, each sent to the two others.
    assert first.value("teleconsult_worker_rooms", **w) == 1
    assert first.value("teleconsult_worker_sessions", **w) == 3
    for kind in ("audio", "video"):
        assert first.value("teleconsult_producers", kind=kind, **w) == 2
        assert first.value("teleconsult_consumers", kind=kind, **w) == 4
        for direction in ("inbound", "outbound"):
            flow = {"direction": direction, "kind": kind, **w}
            assert first.value("teleconsult_media_bytes_total", **flow) > 0
            assert first.value("teleconsult_media_packets_total", **flow) > 0
            assert first.value("teleconsult_media_packets_lost_total", **flow) >= 0
            assert first.value("teleconsult_media_nacks_total", **flow) >= 0
    # Subscribers' new Consumers asked the publishers for keyframes.
    plis = first.value("teleconsult_media_plis_total", direction="inbound", kind="video", **w)
    assert plis >= 1
    # Round trips from the bots' receiver reports; loopback is fast.
    assert first.value("teleconsult_media_round_trip_seconds_bucket", le="0.1", **w) >= 1
    assert first.value("teleconsult_worker_event_loop_lag_seconds_count", **w) > 0
    assert first.value("teleconsult_recordings", **w) == 0
    assert first.value("teleconsult_recording_failures_total", reason="disk_full", **w) == 0

    # Counters rise while media flows.
    await asyncio.sleep(1.0)
    second = await _until(lambda s: True, 0, harness.base_url)
    for direction in ("inbound", "outbound"):
        flow = {"direction": direction, "kind": "video", **w}
        assert second.value("teleconsult_media_bytes_total", **flow) > first.value(
            "teleconsult_media_bytes_total", **flow
        )
        assert second.value("teleconsult_media_packets_total", **flow) > first.value(
            "teleconsult_media_packets_total", **flow
        )

    # Nobody's identity, name, participant id or consultation in any label or value.
    room = harness.room(bots[0].joined.consultation.id)  # type: ignore[union-attr]
    assert room is not None
    secret_words = {room.consultation_id, *NAMES.values()}
    for member in room.members.values():
        secret_words |= {member.id, member.grant.identity, member.grant.name}
    for word in secret_words:
        assert word not in second.text, word
    labels = second.labels() - {worker}
    bounds = {v for v in labels if v == "+Inf" or v.replace(".", "", 1).isdigit()}
    assert labels - bounds <= ALLOWED_LABELS, labels - bounds - ALLOWED_LABELS

    # After the call: the gauges go back to zero, the counters keep what they counted.
    for bot in bots:
        await bot.close()
    after = await _until(
        lambda s: s.value("teleconsult_worker_sessions", **w) == 0, 10, harness.base_url
    )
    assert after.value("teleconsult_rooms") == 0
    assert after.value("teleconsult_participants", role="doctor") == 0
    assert after.value("teleconsult_producers", kind="video", **w) == 0
    flow = {"direction": "outbound", "kind": "video", **w}
    assert after.value("teleconsult_media_bytes_total", **flow) >= second.value(
        "teleconsult_media_bytes_total", **flow
    )


async def test_metrics_during_a_call(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    bots = await _call(harness, consultation, video_clip, audio_clip)
    await _assert_a_call_shows(harness, bots, "embedded")


@contextlib.asynccontextmanager
async def _worker_on_the_bus(redis: RedisServer, media: MediaConfig) -> AsyncIterator[str]:
    """A media Worker serving on the Redis bus in this process, as ``teleconsult worker``
    would in another; its id."""
    connection = aioredis.Redis.from_url(redis.url)
    worker = WorkerServer(connection, media)
    serving = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(5):
            while not await worker.registry.alive(worker.id):
                await asyncio.sleep(0.05)
        yield worker.id
    finally:
        worker.stopping.set()
        await asyncio.wait_for(serving, 10)
        await connection.aclose()


async def test_metrics_with_the_worker_on_the_redis_bus(
    config: ServerConfig,
    redis_server: RedisServer,
    video_clip: Clip,
    audio_clip: Clip,
) -> None:
    bus_config = replace(config, redis_url=redis_server.url, workers=0)
    async with _worker_on_the_bus(redis_server, config.media) as worker_id:
        async with running(bus_config) as harness:
            bots = await _call(harness, new_consultation_id(), video_clip, audio_clip)
            await _assert_a_call_shows(harness, bots, worker_id)


# ------------------------------------------------------------------ who may scrape


def _address_of_this_host() -> str | None:
    """An address of this machine that is not loopback, added to ``lo`` for the test.

    Only inside tests/isolated.sh's namespace (nothing but ``lo`` exists there), where the
    address dies with the namespace; elsewhere the test is skipped rather than touch the
    machine's interfaces.
    """
    import subprocess

    if [name for _, name in socket.if_nameindex()] != ["lo"]:
        return None
    address = "192.0.2.10"  # TEST-NET-1: never routed anywhere
    added = subprocess.run(
        ["ip", "addr", "add", f"{address}/32", "dev", "lo"], capture_output=True, check=False
    )
    if added.returncode != 0 and b"exists" not in added.stderr:
        return None
    return address


@contextlib.asynccontextmanager
async def _listening_everywhere(config: ServerConfig) -> AsyncIterator[int]:
    """The app on every address of this host (its port)."""
    server = TestServer(create_app(config), host="0.0.0.0")
    await server.start_server()
    try:
        assert server.port is not None
        yield server.port
    finally:
        await server.close()


async def _scrape_from(source: str, base_url: str, token: str | None = None) -> int:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(base_url + "/metrics", headers=headers) as resp:
            await resp.read()
            return resp.status


async def test_metrics_are_refused_to_other_addresses_without_a_token(config: ServerConfig) -> None:
    source = _address_of_this_host()
    if source is None:
        pytest.skip("needs tests/isolated.sh's namespace to add a non-loopback address")
    async with _listening_everywhere(config) as port:
        base = f"http://{source}:{port}"
        assert await _scrape_from(source, base) == 403
        assert await _scrape_from("127.0.0.1", f"http://127.0.0.1:{port}") == 200
        # A forged forwarded-for changes nothing: the TCP peer is what counts.
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=(source, 0))
        ) as http:
            async with http.get(
                base + "/metrics", headers={"X-Forwarded-For": "127.0.0.1"}
            ) as resp:
                assert resp.status == 403


async def test_with_a_token_every_scrape_must_bear_it(config: ServerConfig) -> None:
    token = secrets.token_urlsafe(24)
    async with running(replace(config, metrics_token=token)) as harness:
        for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            status, body = await scrape(harness.base_url, headers)
            assert status == 401, (headers, status)
            assert token not in body
        status, body = await scrape(harness.base_url, {"Authorization": f"Bearer {token}"})
        assert status == 200 and "teleconsult_rooms" in body
    source = _address_of_this_host()
    if source is not None:
        async with _listening_everywhere(replace(config, metrics_token=token)) as port:
            base = f"http://{source}:{port}"
            assert await _scrape_from(source, base) == 401
            assert await _scrape_from(source, base, token) == 200


async def test_a_recording_shows_in_the_workers_numbers(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    w = {"worker": "embedded"}
    doctor = harness.bot(
        harness.token(consultation, Role.doctor), video=video_clip, audio=audio_clip
    )
    patient = harness.bot(harness.token(consultation, Role.patient), video=video_clip)
    for bot in (doctor, patient):
        await bot.connect()
    assert await doctor.wait_for(
        lambda: doctor.frames_from(patient.participant_id, "video") > 5,  # type: ignore[arg-type]
        15,
    )
    await doctor.send(p.Record(type="record", action="start"))
    assert await patient.wait_for(
        lambda: any(isinstance(e, p.ConsentRequest) for e in patient.events), 5
    )
    await patient.send(p.Consent(type="consent", granted=True))
    first = await _until(
        lambda s: s.value("teleconsult_recording_bytes_total", **w) > 0, 10, harness.base_url
    )
    assert first.value("teleconsult_recordings", **w) == 1
    later = await _until(
        lambda s: (
            s.value("teleconsult_recording_bytes_total", **w)
            > first.value("teleconsult_recording_bytes_total", **w)
        ),
        10,
        harness.base_url,
    )
    await doctor.send(p.Record(type="record", action="stop"))
    stopped = await _until(
        lambda s: s.value("teleconsult_recordings", **w) == 0, 10, harness.base_url
    )
    # What was recorded stays counted once the recording is over.
    assert stopped.value("teleconsult_recording_bytes_total", **w) >= later.value(
        "teleconsult_recording_bytes_total", **w
    )
    assert stopped.value("teleconsult_recording_failures_total", reason="error", **w) == 0
