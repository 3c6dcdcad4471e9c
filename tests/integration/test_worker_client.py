"""The WorkerClient contract: what signaling may rely on, whatever carries it.

Real aiortc peers are wired straight to the client: offers arrive as events, answers go back
as calls, nothing but ids and values crosses. The suite is parametrized by implementation;
every WorkerClient (the in-process one today, one behind a bus later) must pass it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from media.bus import RedisWorkerClient, WorkerServer
from media.client import ProducerInfo, QualitySample, SlotDescription, WorkerClient
from media.clips import Clip, ClipTrack
from media.codecs import is_vp8_keyframe
from media.config import MediaConfig
from media.errors import MediaError
from media.local import LocalWorkerClient
from signaling import protocol as p
from signaling.bot import Bot
from tests.conftest import RedisServer

CID = "contract-room-1"


class Events:
    """WorkerEvents for the test: offers go to the peer they are for, the rest is kept."""

    def __init__(self) -> None:
        self.peers: dict[str, DirectPeer] = {}
        self.opened: list[ProducerInfo] = []
        self.closed: list[ProducerInfo] = []
        self.failed: list[tuple[str, str]] = []
        self.notices: list[tuple[str, str]] = []
        self.notice_messages: list[tuple[str, str, str]] = []
        self.recording: list[dict[str, Any]] = []
        self.lost: list[str] = []
        self.samples: list[QualitySample] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def offer(
        self, consultation_id: str, participant_id: str, sdp: str, slots: list[SlotDescription]
    ) -> None:
        peer = self.peers[participant_id]
        tracks = [
            p.TrackSlot(
                mid=s.mid,
                kind=s.kind,
                role=s.role,
                participantId=s.participant_id,
                producerId=s.producer_id,
                source=s.source,
            )
            for s in slots
        ]
        task = asyncio.get_running_loop().create_task(
            peer.answer_offer(p.Offer(sdp=sdp, tracks=tracks))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def producer_opened(self, consultation_id: str, producer: ProducerInfo) -> None:
        self.opened.append(producer)

    def producer_closed(self, consultation_id: str, producer: ProducerInfo) -> None:
        self.closed.append(producer)

    def session_failed(self, consultation_id: str, participant_id: str, reason: str) -> None:
        self.failed.append((participant_id, reason))

    def notice(self, consultation_id: str, participant_id: str, code: str, message: str) -> None:
        self.notices.append((participant_id, code))
        self.notice_messages.append((participant_id, code, message))

    def recording_event(self, consultation_id: str, event: dict[str, Any]) -> None:
        self.recording.append(event)

    def media_lost(self, consultation_id: str, reason: str) -> None:
        self.lost.append(consultation_id)

    def quality(self, consultation_id: str, samples: list[QualitySample]) -> None:
        self.samples.extend(samples)


class DirectPeer(Bot):
    """A Bot whose signaling is a WorkerClient: it answers offers by calling ``answer``."""

    def __init__(self, client: WorkerClient, participant_id: str, **kwargs: Any) -> None:
        super().__init__("http://unused", "unused", **kwargs)
        self.client = client
        self.frames: list[tuple[str, str | None, bytes]] = []
        self._on_frame = lambda kind, who, data, now: self.frames.append((kind, who, data))
        self._me = participant_id

    async def start(self) -> None:
        joined = p.Joined(
            participant=p.ParticipantInfo(id=self._me, name="", role="expert"),
            consultation=p.ConsultationInfo(id=CID, kind="joint"),
            participants=[],
            iceServers=[],
            permissions=[],
        )
        await self._handle(joined)

    async def answer_offer(self, offer: p.Offer) -> None:
        await self._answer(offer)

    async def send(self, message: p._Message) -> None:
        assert isinstance(message, p.Answer)
        await self.client.answer(CID, self._me, message.sdp)


@contextlib.asynccontextmanager
async def _local(events: Events, request: pytest.FixtureRequest) -> AsyncIterator[WorkerClient]:
    yield LocalWorkerClient(MediaConfig(answer_timeout_s=5.0), events)


@contextlib.asynccontextmanager
async def _redis(events: Events, request: pytest.FixtureRequest) -> AsyncIterator[WorkerClient]:
    """A Worker serving on a real Redis bus (in this process), driven over it."""
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"t{secrets.token_hex(3)}:"
    worker_redis = aioredis.Redis.from_url(server.url)
    node_redis = aioredis.Redis.from_url(server.url)
    worker = WorkerServer(worker_redis, MediaConfig(answer_timeout_s=5.0), prefix=prefix)
    serving = asyncio.create_task(worker.run())
    client = RedisWorkerClient(node_redis, events, prefix=prefix)
    try:
        await client.start()
        async with asyncio.timeout(5):
            while not await client.registry.live_workers():
                await asyncio.sleep(0.05)
        yield client
    finally:
        worker.stopping.set()
        await asyncio.wait_for(serving, 10)
        await worker_redis.aclose()
        await node_redis.aclose()


IMPLEMENTATIONS: dict[str, Callable[..., contextlib.AbstractAsyncContextManager[WorkerClient]]] = {
    "local": _local,
    "redis": _redis,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[tuple[WorkerClient, Events]]:
    events = Events()
    async with IMPLEMENTATIONS[request.param](events, request) as client:
        try:
            yield client, events
        finally:
            await client.close()
            for peer in events.peers.values():
                await peer.close(leave=False)


async def _peer(
    client: WorkerClient, events: Events, participant_id: str, **media: Clip
) -> DirectPeer:
    peer = DirectPeer(client, participant_id, **media)
    events.peers[participant_id] = peer
    await peer.start()
    await client.open_session(CID, participant_id, publish=tuple(media), subscribe=True)  # type: ignore[arg-type]
    return peer


async def test_sessions_exchange_media_and_report_by_ids(
    setup: tuple[WorkerClient, Events], video_clip: Clip, audio_clip: Clip
) -> None:
    client, events = setup
    a = await _peer(client, events, "Pa", video=video_clip, audio=audio_clip)
    b = await _peer(client, events, "Pb", video=video_clip)
    assert await b.wait_for(lambda: b.frames_from("Pa", "video") > 20, 15)
    assert await a.wait_for(lambda: a.frames_from("Pb", "video") > 20, 15)
    assert b.frames_from("Pa", "audio") > 20
    assert {(x.participant_id, x.kind) for x in events.opened} == {
        ("Pa", "video"),
        ("Pa", "audio"),
        ("Pb", "video"),
    }
    stats = await client.stats()
    assert (stats.rooms, stats.sessions, stats.producers, stats.consumers) == (1, 2, 3, 3)
    (metrics,) = await client.metrics()
    assert (metrics.rooms, metrics.sessions, metrics.producers) == (1, 2, {"audio": 1, "video": 2})
    video_in = next(f for f in metrics.flows if (f.direction, f.kind) == ("inbound", "video"))
    assert video_in.bytes > 0 and video_in.packets > 0
    # Each session's quality comes back as events, by participant id, every few seconds.
    assert await b.wait_for(lambda: {s.participant_id for s in events.samples} >= {"Pa", "Pb"}, 15)
    sample = next(s for s in events.samples if s.participant_id == "Pa")
    assert sample.fps_in is not None and sample.fps_in > 0 and sample.kbps_in

    await client.close_session(CID, "Pb")
    await client.close_session(CID, "Pb")  # idempotent
    # Over the bus an event may arrive after the call's reply: wait, then check exactly once.
    assert await b.wait_for(lambda: bool(events.closed), 5)
    await asyncio.sleep(0.2)
    assert [(x.participant_id, x.kind) for x in events.closed] == [("Pb", "video")]
    assert (await client.stats()).sessions == 1
    await client.close_session(CID, "Pa")
    assert (await client.stats()).rooms == 0
    assert events.failed == []


async def test_bad_calls_are_typed_errors(
    setup: tuple[WorkerClient, Events], video_clip: Clip
) -> None:
    client, events = setup
    await _peer(client, events, "Pa", video=video_clip)
    with pytest.raises(MediaError) as exc:
        await client.answer(CID, "Pnobody", "v=0\r\n")
    assert exc.value.code == "unexpected"
    with pytest.raises(MediaError) as exc:
        await client.open_session(CID, "Pa", publish=(), subscribe=True)
    assert exc.value.code == "unexpected"
    with pytest.raises(MediaError) as exc:
        await client.candidate(CID, "Pa", "candidate:garbage", "0", None)
    assert exc.value.code == "bad_candidate"


async def test_paused_producers_are_not_forwarded_and_resume_at_a_keyframe(
    setup: tuple[WorkerClient, Events], video_clip: Clip, audio_clip: Clip
) -> None:
    client, events = setup
    await _peer(client, events, "Pa", video=video_clip, audio=audio_clip)
    b = await _peer(client, events, "Pb")
    assert await b.wait_for(lambda: b.frames_from("Pa", "video") > 20, 15)

    await client.pause_producers(CID, "Pa", "video", True)
    await asyncio.sleep(0.3)  # what was in flight lands
    video, audio = b.frames_from("Pa", "video"), b.frames_from("Pa", "audio")
    await asyncio.sleep(1.5)
    assert b.frames_from("Pa", "video") == video  # nothing forwarded while paused
    assert b.frames_from("Pa", "audio") > audio + 30  # the other kind goes on
    assert (await client.stats()).paused_producers == 1

    mark = len(b.frames)
    await client.pause_producers(CID, "Pa", "video", False)
    assert await b.wait_for(lambda: b.frames_from("Pa", "video") > video + 10, 10)
    first = next(data for kind, _, data in b.frames[mark:] if kind == "video")
    assert is_vp8_keyframe(first)  # a subscriber can decode from the first frame it gets


async def test_a_paused_consumer_starves_one_subscriber_only(
    setup: tuple[WorkerClient, Events], video_clip: Clip, audio_clip: Clip
) -> None:
    client, events = setup
    await _peer(client, events, "Pa", video=video_clip, audio=audio_clip)
    b = await _peer(client, events, "Pb")
    c = await _peer(client, events, "Pc")
    assert await c.wait_for(
        lambda: min(b.frames_from("Pa", "video"), c.frames_from("Pa", "video")) > 20, 15
    )
    # Low-bandwidth mode for b: no video, audio still.
    await client.pause_consumers(CID, "Pb", "video", True)
    await asyncio.sleep(0.3)
    b_video, c_video = b.frames_from("Pa", "video"), c.frames_from("Pa", "video")
    b_audio = b.frames_from("Pa", "audio")
    await asyncio.sleep(1.5)
    assert b.frames_from("Pa", "video") == b_video
    assert b.frames_from("Pa", "audio") > b_audio + 30
    assert c.frames_from("Pa", "video") > c_video + 30
    assert (await client.stats()).paused_consumers == 1
    await client.pause_consumers(CID, "Pb", "video", False)
    assert await b.wait_for(lambda: b.frames_from("Pa", "video") > b_video + 10, 10)


async def test_a_follower_of_the_speaker_gets_only_the_speakers_video(
    setup: tuple[WorkerClient, Events], video_clip: Clip, audio_clip: Clip
) -> None:
    client, events = setup
    await _peer(client, events, "Pa", video=video_clip, audio=audio_clip)  # talks
    await _peer(client, events, "Pq", video=video_clip)  # says nothing
    c = await _peer(client, events, "Pc")
    assert await c.wait_for(
        lambda: min(c.frames_from("Pa", "video"), c.frames_from("Pq", "video")) > 20, 15
    )
    await client.follow_speaker(CID, "Pc", True)
    assert await c.wait_for(lambda: ("Pc", "video_speaker", "Pa") in events.notice_messages, 10)
    await asyncio.sleep(0.5)
    quiet, talker = c.frames_from("Pq", "video"), c.frames_from("Pa", "video")
    await asyncio.sleep(1.5)
    assert c.frames_from("Pq", "video") == quiet
    assert c.frames_from("Pa", "video") > talker + 20
    await client.follow_speaker(CID, "Pc", False)
    assert await c.wait_for(lambda: c.frames_from("Pq", "video") > quiet + 10, 10)


async def test_extra_video_producers_come_and_go_by_source(
    setup: tuple[WorkerClient, Events],
    video_clip: Clip,
    audio_clip: Clip,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A screen share is one more video Producer: forwarded encoded to every subscriber,
    paused on its own, closed without touching the camera, its m-line reused."""
    client, events = setup
    a = await _peer(client, events, "Pa", video=video_clip, audio=audio_clip)
    b = await _peer(client, events, "Pb")
    assert await b.wait_for(lambda: b.frames_from("Pa", "video") > 10, 15)
    (camera,) = [x.producer_id for x in events.opened if x.source == "camera"]

    a.extra_tracks["screen"] = ClipTrack(video_clip)
    await client.publish_extra(CID, "Pa", "screen")
    assert await b.wait_for(lambda: any(x.source == "screen" for x in events.opened), 10)
    (screen,) = [x for x in events.opened if x.source == "screen"]
    assert (screen.participant_id, screen.kind) == ("Pa", "video")
    assert await b.wait_for(lambda: b.frames_of(screen.producer_id) > 20, 10)
    assert b.frames_of(camera) > 20
    with pytest.raises(MediaError) as exc:
        await client.publish_extra(CID, "Pa", "screen")
    assert exc.value.code == "unexpected"

    # The camera off (its source), the screen goes on; then the screen paused alone.
    await client.pause_producers(CID, "Pa", "video", True)
    await asyncio.sleep(0.3)
    cam, scr = b.frames_of(camera), b.frames_of(screen.producer_id)
    await asyncio.sleep(1.0)
    assert b.frames_of(camera) == cam and b.frames_of(screen.producer_id) > scr + 15
    await client.pause_producers(CID, "Pa", "video", False)
    await client.pause_producers(CID, "Pa", "video", True, "screen")
    await asyncio.sleep(0.3)
    cam, scr = b.frames_of(camera), b.frames_of(screen.producer_id)
    await asyncio.sleep(1.0)
    assert b.frames_of(screen.producer_id) == scr and b.frames_of(camera) > cam + 15
    await client.pause_producers(CID, "Pa", "video", False, "screen")
    assert await b.wait_for(lambda: b.frames_of(screen.producer_id) > scr + 10, 10)

    # Past the limit of extra Producers: a typed error (the limit lowered to one here).
    monkeypatch.setattr("media.session.MAX_EXTRA_PRODUCERS", 1)
    with pytest.raises(MediaError) as exc:
        await client.publish_extra(CID, "Pa", "camera2")
    assert exc.value.code == "too_many_producers"
    monkeypatch.undo()

    # Stopped: closed by id, nothing more forwarded, the camera untouched.
    lines = len(a.pc.getTransceivers())  # type: ignore[union-attr]
    await client.unpublish_extra(CID, "Pa", "screen")
    await client.unpublish_extra(CID, "Pa", "screen")  # idempotent
    assert await b.wait_for(lambda: any(x.source == "screen" for x in events.closed), 5)
    a.extra_tracks.pop("screen")
    await asyncio.sleep(0.5)
    scr, cam = b.frames_of(screen.producer_id), b.frames_of(camera)
    await asyncio.sleep(1.0)
    assert b.frames_of(screen.producer_id) == scr and b.frames_of(camera) > cam + 15

    # A second camera next: a new Producer on the idle m-line, no new m-line.
    a.extra_tracks["camera2"] = ClipTrack(video_clip)
    await client.publish_extra(CID, "Pa", "camera2")
    assert await b.wait_for(lambda: any(x.source == "camera2" for x in events.opened), 10)
    (second,) = [x for x in events.opened if x.source == "camera2"]
    assert second.producer_id != screen.producer_id
    assert await b.wait_for(lambda: b.frames_of(second.producer_id) > 20, 10)
    assert len(a.pc.getTransceivers()) == lines  # type: ignore[union-attr]
    assert (await client.stats()).producers == 3
    assert events.failed == []
