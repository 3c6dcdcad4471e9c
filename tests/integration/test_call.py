"""Real aiortc peers over loopback, through the real signaling protocol and Worker."""

from __future__ import annotations

import asyncio
import time

from media.client import WorkerStats
from media.clips import Clip
from rooms.roles import Role
from tests.integration.conftest import Harness


async def _join_all(bots: list) -> None:
    await asyncio.gather(*(b.connect() for b in bots))


async def test_three_participants_receive_each_other(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    roles = [Role.doctor, Role.expert, Role.patient]
    bots = [
        harness.bot(harness.token(consultation, role), video=video_clip, audio=audio_clip)
        for role in roles
    ]
    await _join_all(bots)
    ids = [b.participant_id for b in bots]

    def everyone_receives() -> bool:
        return all(
            bot.frames_from(other, "video") >= 30 and bot.frames_from(other, "audio") >= 40
            for bot in bots
            for other in ids
            if other != bot.participant_id
        )

    assert await bots[0].wait_for(everyone_receives, timeout=20), [
        {k: (i.kind, i.participant_id, i.frames) for k, i in b.inbound.items()} for b in bots
    ]
    for bot in bots:
        # Never their own media back, and every video stream starts at a keyframe.
        assert bot.frames_from(bot.participant_id, "video") == 0
        for inbound in bot.inbound.values():
            if inbound.kind == "video" and inbound.frames:
                assert inbound.first_frame_was_keyframe
    assert harness.worker.stats() == WorkerStats(rooms=1, sessions=3, producers=6, consumers=12)


async def test_late_joiner_sees_video_within_a_second(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    early = [
        harness.bot(harness.token(consultation, role), video=video_clip, audio=audio_clip)
        for role in (Role.doctor, Role.patient)
    ]
    await _join_all(early)
    publisher = early[0]
    # Let the clip run well past its only keyframe: without a forwarded PLI the late
    # joiner would wait for the clip to loop (10 s).
    assert await early[1].wait_for(
        lambda: early[1].frames_from(publisher.participant_id, "video") >= 45, timeout=15
    )
    late = harness.bot(harness.token(consultation, Role.expert))
    started = time.monotonic()
    await late.connect()
    assert await late.wait_for(
        lambda: late.frames_from(publisher.participant_id, "video") >= 1, timeout=5
    )
    first = min(
        i.first_frame_at for i in late.inbound.values() if i.kind == "video" and i.first_frame_at
    )
    assert first - started < 1.0, f"first frame after {first - started:.2f} s"
    assert all(
        i.first_frame_was_keyframe for i in late.inbound.values() if i.kind == "video" and i.frames
    )
    assert publisher.tracks["video"].keyframe_requests >= 1
