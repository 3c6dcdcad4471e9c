"""Several signaling nodes on one Redis, as real processes: two ``teleconsult serve --redis``
on two ports, each with one media Worker process. Participants of one consultation joining
through different nodes all receive each other's media (one node owns the Room, the other
relays); a node killed with -9 or a Redis restarted mid-call does not end the call."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from media.clips import Clip
from rooms.redis_client import connect
from rooms.redis_store import RedisRoomStore
from rooms.roles import Role
from signaling import protocol as p
from signaling.audit.log import log_path
from signaling.bot import Bot
from signaling.nodes import Nodes
from signaling.tokens import mint
from tests.conftest import RedisServer
from tests.integration.multinode import Cluster, OwnRedis, own_redis, start_cluster
from tests.integration.server_process import free_port, start_server, stop_server, wait_healthy

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
async def cluster(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Cluster]:
    cluster = await start_cluster(tmp_path, redis_server.url)
    try:
        yield cluster
    finally:
        await cluster.close()
        redis = connect(redis_server.url)
        await redis.flushdb()
        await redis.aclose()


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    yield from own_redis(tmp_path)


def _audit(node_dir: Path) -> list[dict]:
    path = log_path(node_dir)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def _all_see_each_other(bots: list, frames: int = 30, timeout: float = 25) -> None:
    for bot in bots:
        for other in bots:
            if other is not bot:
                assert await bot.wait_for(
                    lambda b=bot, o=other: b.frames_from(o.participant_id, "video") > frames,
                    timeout,
                ), f"{bot.participant_id} got no video from {other.participant_id}"


async def test_participants_on_two_nodes_receive_each_others_media(
    cluster: Cluster, video_clip: Clip, audio_clip: Clip
) -> None:
    a, b = cluster.nodes
    media = {"video": video_clip, "audio": audio_clip}
    doctor = cluster.bot(a, "mn-call-1", Role.doctor, **media)
    patient = cluster.bot(b, "mn-call-1", Role.patient, **media)
    expert = cluster.bot(b, "mn-call-1", Role.expert, **media)
    await doctor.connect()
    await patient.connect()
    await expert.connect()
    await _all_see_each_other([doctor, patient, expert])
    # One Room, on one node: everyone heard of everyone, whichever node their socket is on.
    assert {x.id for x in patient.joined.participants} == {doctor.participant_id}  # type: ignore[union-attr]
    assert any(
        isinstance(e, p.ParticipantJoined) and e.participant.id == expert.participant_id
        for e in doctor.events
    )
    assert await cluster.owner("mn-call-1") is a
    # A message relayed through the other node is answered by the owner's Room.
    await patient.send(p.Mute(type="mute", kind="audio", muted=True))
    assert await doctor.wait_for(
        lambda: any(isinstance(e, p.MuteChanged) and e.participantId == patient.participant_id
                    for e in doctor.events), 5,
    )  # fmt: skip
    await patient.send(p.Record(type="record", action="start"))  # a patient may not
    assert await patient.wait_for(
        lambda: any(e.code == "forbidden" and e.ref == "record" for e in patient.errors), 5
    )
    # A second consultation, first joined through the other node, is owned there and placed
    # on the other Worker.
    await asyncio.sleep(1.2)  # the loaded Worker's heartbeat says so
    second = [cluster.bot(b, "mn-call-2", role, **media) for role in (Role.doctor, Role.expert)]
    second.append(cluster.bot(a, "mn-call-2", Role.patient, **media))
    for bot in second:
        await bot.connect()
    await _all_see_each_other(second)
    assert await cluster.owner("mn-call-2") is b
    placed = {await cluster.registry.placement(c) for c in ("mn-call-1", "mn-call-2")}
    assert len(placed) == 2 and None not in placed
    # Every entry of a consultation is in its owner's audit log, in the Room's order.
    entries = [e for e in _audit(a.data_dir) if e.get("consultation") == "mn-call-1"]
    joins = [e["participant"] for e in entries if e["action"] == "join"]
    assert joins == [doctor.participant_id, patient.participant_id, expert.participant_id]
    assert not [e for e in _audit(b.data_dir) if e.get("consultation") == "mn-call-1"]


async def test_leaving_through_the_other_node_frees_the_seat_and_the_claim(
    cluster: Cluster, video_clip: Clip
) -> None:
    a, b = cluster.nodes
    doctor = cluster.bot(a, "mn-leave-1", Role.doctor, video=video_clip)
    patient = cluster.bot(b, "mn-leave-1", Role.patient, video=video_clip)
    await doctor.connect()
    await patient.connect()
    await patient.close()
    assert await doctor.wait_for(
        lambda: any(isinstance(e, p.ParticipantLeft) and e.participantId == patient.participant_id
                    for e in doctor.events), 5,
    )  # fmt: skip
    store = RedisRoomStore.from_url(cluster.redis_url)
    try:
        assert [x.id for x in await store.participants("mn-leave-1")] == [doctor.participant_id]
        await doctor.close()
        async with asyncio.timeout(5):
            while await cluster.directory.owner("mn-leave-1") is not None:
                await asyncio.sleep(0.1)
        assert await store.participants("mn-leave-1") == []
    finally:
        await store.close()


async def test_two_nodes_racing_for_one_consultation_have_one_winner(
    redis_server: RedisServer,
) -> None:
    import redis.asyncio as aioredis

    redis = aioredis.Redis.from_url(redis_server.url)
    try:
        await redis.delete("tc:nodes-since")
        racers = [Nodes(redis, f"racer-{i}") for i in range(8)]
        owners = await asyncio.gather(*(n.claim("mn-race-1") for n in racers))
        assert len(set(owners)) == 1 and owners[0].startswith("racer-")
    finally:
        await redis.delete("tc:owner:mn-race-1")
        await redis.aclose()


async def test_a_malformed_relay_message_is_dropped_and_a_silent_owner_is_a_typed_error(
    cluster: Cluster, video_clip: Clip
) -> None:
    a, b = cluster.nodes
    for garbage in (b"\xff", b"[]", b'{"t": "join"}', b'{"t": "nope", "from": "x", "conn": "y"}'):
        for channel in await cluster.redis.pubsub_channels("tc:relay:*"):
            await cluster.redis.publish(channel, garbage)
    # A message for a socket the node does not have: the sender is told to let it go.
    async with cluster.redis.pubsub() as pubsub:
        await pubsub.subscribe("tc:relay:node-fake")
        (channel,) = [c for c in await cluster.redis.pubsub_channels("tc:relay:node-*")
                      if c != b"tc:relay:node-fake"][:1]  # fmt: skip
        down = {"t": "down", "from": "node-fake", "conn": "c-1", "m": '{"type":"pong"}'}
        await cluster.redis.publish(channel, json.dumps(down))
        async with asyncio.timeout(5):
            while True:
                got = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if got is not None:
                    break
        assert json.loads(got["data"]) | {"from": None} == {
            "t": "gone",
            "conn": "c-1",
            "held": False,
            "from": None,
        }
    # A claim held by a node that never answers: the join fails in time, typed.
    await cluster.redis.set("tc:owner:mn-ghost-1", "node-ghost", px=60_000)
    bot = cluster.bot(a, "mn-ghost-1", Role.doctor, video=video_clip)
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        await bot.connect(timeout=30)
    assert time.monotonic() - started < 20
    assert [e.code for e in bot.errors] == ["node_unavailable"]
    # Both nodes still serve.
    ok = cluster.bot(b, "mn-ghost-2", Role.doctor, video=video_clip)
    await ok.connect()
    assert "malformed relay message dropped" in (a.log.read_text() + b.log.read_text())


async def test_a_killed_edge_node_s_participants_resume_through_the_other(
    cluster: Cluster, video_clip: Clip, audio_clip: Clip
) -> None:
    a, b = cluster.nodes
    media = {"video": video_clip, "audio": audio_clip}
    doctor = cluster.bot(a, "mn-edge-1", Role.doctor, **media)
    patient = cluster.bot(b, "mn-edge-1", Role.patient, **media)
    await doctor.connect()
    await patient.connect()
    await _all_see_each_other([doctor, patient])
    assert await cluster.owner("mn-edge-1") is a
    cluster.kill(b)
    # Its client reconnects through the other node with the same token: the owner held the
    # session, so it goes on (same participant, same media connection).
    patient.base_url = a.url
    before = doctor.frames_from(patient.participant_id, "video")
    assert await patient.resume(timeout=10) is True
    assert patient.media_resets == 0
    assert await doctor.wait_for(
        lambda: doctor.frames_from(patient.participant_id, "video") > before + 30, 10
    )


async def test_a_killed_owner_node_s_consultation_is_taken_over_by_the_other(
    cluster: Cluster, video_clip: Clip, audio_clip: Clip
) -> None:
    a, b = cluster.nodes
    media = {"video": video_clip, "audio": audio_clip}
    doctor = cluster.bot(a, "mn-owner-1", Role.doctor, **media)
    patient = cluster.bot(b, "mn-owner-1", Role.patient, **media)
    observer = cluster.bot(a, "mn-owner-1", Role.expert, **media)
    await doctor.connect()
    await patient.connect()
    await observer.connect()
    await _all_see_each_other([doctor, patient])
    assert await cluster.owner("mn-owner-1") is a
    # Someone alone in another consultation on the same node, who will not come back.
    lone = cluster.bot(a, "mn-owner-2", Role.doctor, **media)
    await lone.connect()
    old_ids = {doctor.participant_id, patient.participant_id, observer.participant_id}
    cluster.kill(a)
    await lone.vanish()
    # The edge finds the owner gone and drops the sockets it relayed: their clients
    # reconnect. The doctor's socket died with its node.
    assert await patient.wait_for(lambda: patient._closed.is_set(), 15)
    # Both reconnect through the surviving node with the same token and resume token: the
    # held session died with its owner, so it is a new join there (a new participant id,
    # a new media connection); the observer never comes back.
    for bot in (doctor, patient):
        bot.base_url = b.url
        assert await bot.resume(timeout=20) is False
    assert await cluster.owner("mn-owner-1") is b
    await _all_see_each_other([doctor, patient], frames=30)
    # The seats the dead owner left are swept; only the new ones remain.
    store = RedisRoomStore.from_url(cluster.redis_url)
    try:
        seats = {x.id for x in await store.participants("mn-owner-1")}
    finally:
        await store.close()
    assert seats == {doctor.participant_id, patient.participant_id}
    await asyncio.sleep(0.5)  # the audit writer thread
    swept = {e["participant"] for e in _audit(b.data_dir) if e["action"] == "seat_swept"}
    assert observer.participant_id in swept and swept & old_ids == old_ids - seats
    # No participant of the swept seats is listed to anyone.
    last_joined = doctor.joined
    assert last_joined is not None
    assert {x.id for x in last_joined.participants} <= seats
    # The consultation nobody came back to is swept too, by the survivor's heartbeat.
    store = RedisRoomStore.from_url(cluster.redis_url)
    try:
        async with asyncio.timeout(20):
            while await store.participants("mn-owner-2"):
                await asyncio.sleep(0.5)
    finally:
        await store.close()
    await asyncio.sleep(0.5)  # the audit writer thread
    swept = {e["participant"] for e in _audit(b.data_dir) if e["action"] == "seat_swept"}
    assert lone.participant_id in swept


async def test_a_redis_restart_mid_call(
    tmp_path: Path, restartable_redis: OwnRedis, video_clip: Clip, audio_clip: Clip
) -> None:
    cluster = await start_cluster(tmp_path, restartable_redis.url)
    try:
        a, b = cluster.nodes
        media = {"video": video_clip, "audio": audio_clip}
        doctor = cluster.bot(a, "mn-redis-1", Role.doctor, **media)
        patient = cluster.bot(b, "mn-redis-1", Role.patient, **media)
        await doctor.connect()
        await patient.connect()
        await _all_see_each_other([doctor, patient])
        restartable_redis.stop()
        stopped_at = time.monotonic()
        # The call goes on without Redis: media does not pass through it.
        before = doctor.frames_from(patient.participant_id, "video")
        await asyncio.sleep(3)
        assert doctor.frames_from(patient.participant_id, "video") > before + 30
        # A new join (through the node that does not own the Room) waits for Redis...
        expert = cluster.bot(b, "mn-redis-1", Role.expert, **media)
        joining = asyncio.create_task(expert.connect(timeout=40))
        await asyncio.sleep(2)
        assert not joining.done()
        restartable_redis.start()
        # ...and succeeds once it is back, into the same Room.
        await joining
        await cluster.redis.aclose()
        cluster.redis = connect(restartable_redis.url)
        assert time.monotonic() - stopped_at < 40
        await _all_see_each_other([doctor, patient, expert], frames=20)
        assert await cluster.owner("mn-redis-1") is a
        assert doctor.bye is None and patient.bye is None
        assert doctor.media_resets == 0 and patient.media_resets == 0
        # The owner told the restarted Redis its seats again.
        store = RedisRoomStore.from_url(restartable_redis.url)
        try:
            seats = {x.id for x in await store.participants("mn-redis-1")}
        finally:
            await store.close()
        assert seats == {doctor.participant_id, patient.participant_id, expert.participant_id}
    finally:
        await cluster.close()


async def test_a_second_node_on_the_same_data_dir_refuses_to_start(
    cluster: Cluster, tmp_path: Path
) -> None:
    # One audit chain, one writer: two nodes must not append to one audit log.
    a = cluster.nodes[0]
    log = tmp_path / "second.log"
    second = start_server(free_port(), a.data_dir, "--redis", cluster.redis_url, log=log)
    assert second.wait(timeout=30) == 1
    assert "its own --data-dir" in log.read_text()
    # The first goes on serving.
    await wait_healthy(a.url, a.process)


async def test_a_join_no_worker_can_take_is_refused_and_leaves_no_seat(
    tmp_path: Path, redis_server: RedisServer, video_clip: Clip
) -> None:
    redis = connect(redis_server.url)
    await redis.flushdb()
    port = free_port()
    log = tmp_path / "node.log"
    node = start_server(port, tmp_path / "data", "--redis", redis_server.url, "--workers", "0",
                        log=log)  # fmt: skip
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", node)
        secret = (tmp_path / "data" / "secret.key").read_text().strip()
        token = mint(secret.encode(), consultation_id="mn-noworker-1", kind="joint",
                     identity="d-1", name="N", role=Role.doctor, waiting_room=False)  # fmt: skip
        bot = Bot(f"http://127.0.0.1:{port}", token, video=video_clip)
        # Seated (``joined`` goes first), then no media session: a typed error, the socket
        # closed, the seat given back.
        with contextlib.suppress(ConnectionError):
            await bot.connect(timeout=20)
        assert await bot.wait_for(lambda: bot.close_code is not None, 10)
        await bot.close()
        assert [e.code for e in bot.errors] == ["worker_unavailable"]
        store = RedisRoomStore.from_url(redis_server.url)
        try:
            assert await store.participants("mn-noworker-1") == []
        finally:
            await store.close()
        assert "Traceback" not in log.read_text()
    finally:
        stop_server(node)
        await redis.flushdb()
        await redis.aclose()
