"""One weak link costs only its own quality: real aiortc peers, one subscriber on a lossy
link (its bot drops a fifth of incoming RTP before aiortc sees it: NACKs, receiver reports
and PLIs all follow from real loss), through the real signaling and Worker."""

from __future__ import annotations

import asyncio
import time

from media.clips import Clip
from media.tap import count_feedback, received
from rooms.roles import Role
from signaling import protocol as p
from tests.integration.conftest import Harness

LOSS = 0.3
WINDOW_S = 15.0


async def test_a_lossy_subscriber_gets_still_frames_and_costs_nobody_else(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    publisher = harness.bot(
        harness.token(consultation, Role.doctor), video=video_clip, audio=audio_clip
    )
    healthy = harness.bot(harness.token(consultation, Role.expert))
    weak = harness.bot(harness.token(consultation, Role.patient), receive_loss=LOSS)
    await asyncio.gather(publisher.connect(), healthy.connect(), weak.connect())
    pid = publisher.participant_id
    assert pid is not None
    assert await healthy.wait_for(lambda: healthy.frames_from(pid, "video") >= 30, timeout=15)
    assert await weak.wait_for(lambda: weak.frames_from(pid, "video") >= 1, timeout=15)

    track = publisher.tracks["video"]
    asked_before, keyframes_before = track.keyframe_requests, track.keyframes_sent
    healthy_before = healthy.frames_from(pid, "video")
    weak_audio_before = weak.frames_from(pid, "audio")
    weak_keys_before = sum(i.keyframes for i in weak.inbound.values() if i.kind == "video")
    started = time.monotonic()
    await asyncio.sleep(WINDOW_S)
    elapsed = time.monotonic() - started

    # Everyone else keeps the full frame rate.
    healthy_fps = (healthy.frames_from(pid, "video") - healthy_before) / elapsed
    assert healthy_fps >= 27, healthy_fps
    # The publisher is not driven into a keyframe storm: a handful of requests in 15 s
    # (a still frame every 8 s, a probe back up now and then).
    asked = track.keyframe_requests - asked_before
    assert asked <= 4, f"{asked} keyframe requests reached the publisher in {elapsed:.0f} s"
    assert track.keyframes_sent - keyframes_before <= 6  # the clip's own (1 in 5 s) included

    # The weak subscriber was lowered alone, told so, and still gets pictures and sound.
    session = harness.worker.session(consultation, weak.participant_id or "")
    assert session is not None
    consumer = next(c for c in session.consumers.values() if c.producer.kind == "video")
    assert consumer.rate_mode == "stills", consumer.rate_mode
    # Of its own keyframe requests (PLIs), at most a couple were passed on.
    assert consumer.keyframe_requests_received - consumer.keyframe_requests_ignored <= 2
    other = harness.worker.session(consultation, healthy.participant_id or "")
    assert other is not None
    assert all(c.rate_mode == "full" for c in other.consumers.values())
    notices = [e for e in weak.events if isinstance(e, p.VideoRate)]
    assert notices and notices[-1].participantId == pid and notices[-1].mode == "stills"
    assert not [e for e in healthy.events if isinstance(e, p.VideoRate)]
    weak_keys = sum(i.keyframes for i in weak.inbound.values() if i.kind == "video")
    assert weak_keys - weak_keys_before >= 1, "no still frame reached the weak subscriber"
    # Its NACKs were answered from its own Consumer's RTP history: none went upstream.
    nacks_in = count_feedback(session.transceivers[0].receiver.transport).nacks.get("video", 0)
    assert nacks_in > 20, nacks_in
    publisher_session = harness.worker.session(consultation, pid)
    assert publisher_session is not None
    video_producer = next(x for x in publisher_session.producers.values() if x.kind == "video")
    upstream = received(video_producer.receiver)
    assert upstream is not None and upstream.nacks <= 2, upstream
    weak_audio = (weak.frames_from(pid, "audio") - weak_audio_before) / elapsed
    assert weak_audio >= 50 * (1 - LOSS) * 0.8, weak_audio  # audio is never dropped
