"""The low-bandwidth modes, enforced by the Worker and counted where the packets arrive:
audio only stops video to that subscriber alone; speaker only forwards the active
speaker's video, and follows when another starts talking."""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
import pytest

from media.clips import Clip
from rooms.roles import Role
from signaling import protocol as p
from signaling.bot import Bot
from tests.integration.conftest import Harness

TIMEOUT = 15.0


@pytest.fixture(scope="module")
def silent_clip() -> Clip:
    """Opus of silence: a few bytes a frame, as a quiet microphone sends (the tone clip is
    ~115 bytes a frame). As long as the tone clip, so one can stand in for the other."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = 48000
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = 32000
    codec.time_base = fractions.Fraction(1, 48000)
    frames: list[bytes] = []
    for i in range(500):
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1920), np.int16), format="s16", layout="stereo"
        )
        frame.sample_rate = 48000
        frame.pts = i * 960
        frames += [bytes(packet) for packet in codec.encode(frame)]
    return Clip("audio", tuple(frames[:500]), (), 960)


def _policy(bot: Bot) -> list[p.VideoPolicyState]:
    return [e for e in bot.events if isinstance(e, p.VideoPolicyState)]


async def _growing(bot: Bot, publisher: Bot, kind: str, seconds: float = 1.5) -> int:
    """How many frames of ``publisher``'s ``kind`` ``bot`` got over ``seconds``."""
    assert publisher.participant_id is not None
    before = bot.frames_from(publisher.participant_id, kind)
    await asyncio.sleep(seconds)
    return bot.frames_from(publisher.participant_id, kind) - before


async def _receiving(bot: Bot, publisher: Bot, kind: str = "video") -> bool:
    assert publisher.participant_id is not None
    pid = publisher.participant_id
    start = bot.frames_from(pid, kind)
    return await bot.wait_for(lambda: bot.frames_from(pid, kind) > start + 10, TIMEOUT)


async def test_audio_only_stops_video_to_that_subscriber_only(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    doctor = harness.bot(
        harness.token(consultation, Role.doctor), video=video_clip, audio=audio_clip
    )
    village = harness.bot(harness.token(consultation, Role.patient))
    other = harness.bot(harness.token(consultation, Role.expert))
    for bot in (doctor, village, other):
        await bot.connect()
    assert await _receiving(village, doctor) and await _receiving(other, doctor)

    await village.send(p.VideoPolicy(type="video_policy", mode="audio_only"))
    assert await village.wait_for(lambda: bool(_policy(village)), TIMEOUT)
    assert _policy(village)[-1].mode == "audio_only"
    await asyncio.sleep(0.5)  # what was in flight
    assert await _growing(village, doctor, "video") == 0
    assert await _growing(village, doctor, "audio") > 30  # sound goes on
    assert await _growing(other, doctor, "video") > 20  # the others are untouched

    # Counted by the Worker too: the village's video Consumer is paused, the other's not.
    session = harness.worker.session(consultation, village.participant_id or "")
    assert session is not None
    paused = {c.producer.kind: c.paused for c in session.consumers.values()}
    assert paused == {"video": True, "audio": False}

    await village.send(p.VideoPolicy(type="video_policy", mode="all"))
    assert await village.wait_for(lambda: _policy(village)[-1].mode == "all", TIMEOUT)
    assert await _receiving(village, doctor)


async def test_speaker_only_follows_the_speaker(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip, silent_clip: Clip
) -> None:
    talker = harness.bot(
        harness.token(consultation, Role.doctor), video=video_clip, audio=audio_clip
    )
    quiet = harness.bot(
        harness.token(consultation, Role.expert), video=video_clip, audio=silent_clip
    )
    village = harness.bot(harness.token(consultation, Role.patient))
    for bot in (talker, quiet, village):
        await bot.connect()
    assert await _receiving(village, talker) and await _receiving(village, quiet)

    await village.send(p.VideoPolicy(type="video_policy", mode="speaker"))
    assert await village.wait_for(
        lambda: any(s.showing == talker.participant_id for s in _policy(village)), TIMEOUT
    )
    await asyncio.sleep(0.5)
    assert await _growing(village, quiet, "video") == 0
    assert await _growing(village, talker, "video") > 20
    assert await _growing(village, quiet, "audio") > 30  # everyone is still heard

    # The other one starts talking and the first falls silent: video follows.
    talker.tracks["audio"].clip, quiet.tracks["audio"].clip = silent_clip, audio_clip
    assert await village.wait_for(
        lambda: _policy(village)[-1].showing == quiet.participant_id, TIMEOUT
    )
    assert await _receiving(village, quiet)
    await asyncio.sleep(0.5)
    assert await _growing(village, talker, "video") == 0

    # Those not in speaker mode still get everyone.
    assert await _receiving(talker, quiet) and await _receiving(quiet, talker)

    # Changing mode too often is refused, and changes nothing.
    for _ in range(6):
        await village.send(p.VideoPolicy(type="video_policy", mode="speaker"))
    assert await village.wait_for(
        lambda: any(e.code == "rate_limited" and e.ref == "video_policy" for e in village.errors),
        TIMEOUT,
    )
