"""One video codec per room, picked for who is in it; a client that cannot use it gets audio.

Firefox without its OpenH264 plugin rejects H.264 video m-lines (port 0). That answer
used to be refused whole, and the participant was dropped with neither audio nor video.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator

import pytest

from media.clips import Clip, h264_clip
from rooms.roles import Role
from signaling import protocol as p
from signaling.bot import Bot
from signaling.config import ServerConfig
from tests.integration.conftest import Harness, running


@pytest.fixture(scope="session")
def h264_video() -> Clip:
    return h264_clip(seconds=10)


@pytest.fixture
async def h264_server(config: ServerConfig) -> AsyncIterator[Harness]:
    """The server as `serve --video-codec H264` runs it."""
    media = dataclasses.replace(config.media, video_codec="H264")
    async with running(dataclasses.replace(config, media=media)) as harness:
        yield harness


def reject_video_like_firefox(sdp: str) -> str:
    """Every video m-line rejected as Firefox does it: port 0, no transport, its own codec,
    and its mid left out of the BUNDLE group."""
    head, *sections = re.split(r"(?=^m=)", sdp, flags=re.MULTILINE)
    out, rejected = [head], []
    for section in sections:
        if section.startswith("m=video"):
            mid = re.search(r"^a=mid:(\S+)", section, re.MULTILINE)
            assert mid is not None
            rejected.append(mid.group(1))
            section = (
                "m=video 0 UDP/TLS/RTP/SAVPF 120\r\nc=IN IP4 0.0.0.0\r\na=inactive\r\n"
                f"a=mid:{mid.group(1)}\r\na=rtpmap:120 VP8/90000\r\n"
            )
        out.append(section)
    answer = "".join(out)
    for mid in rejected:
        answer = re.sub(rf"^(a=group:BUNDLE.*?) {mid}\b", r"\1", answer, flags=re.MULTILINE)
    return answer


class RejectsVideo(Bot):
    """A client that says nothing of its codecs (an old page) and rejects video m-lines."""

    async def _answer(self, offer: p.Offer) -> None:
        tracks = [
            t.model_copy(update={"role": "idle"}) if t.kind == "video" else t for t in offer.tracks
        ]
        await super()._answer(offer.model_copy(update={"tracks": tracks}))

    async def send(self, message: p._Message) -> None:
        if isinstance(message, p.Answer):
            message = p.Answer(type="answer", sdp=reject_video_like_firefox(message.sdp))
        await super().send(message)


async def test_rejected_video_m_lines_leave_the_participant_with_audio(
    h264_server: Harness, consultation: str, h264_video: Clip, audio_clip: Clip
) -> None:
    harness = h264_server
    doctor, patient = (
        harness.bot(
            harness.token(consultation, role),
            video=h264_video,
            audio=audio_clip,
            video_codec="H264",
        )
        for role in (Role.doctor, Role.patient)
    )
    await asyncio.gather(doctor.connect(), patient.connect())
    firefox = RejectsVideo(
        harness.base_url,
        harness.token(consultation, Role.expert),
        video=h264_video,
        audio=audio_clip,
        video_codec="H264",
    )
    harness.bots.append(firefox)
    await firefox.connect()

    # It stays, and audio flows both ways.
    assert await firefox.wait_for(
        lambda: all(
            firefox.frames_from(x.participant_id, "audio") > 50
            and x.frames_from(firefox.participant_id, "audio") > 50
            for x in (doctor, patient)
        ),
        timeout=15,
    )
    assert [e.code for e in firefox.errors] == ["video_unavailable"]
    assert "H264" in firefox.errors[0].message
    assert firefox.bye is None
    session = harness.worker.session(consultation, firefox.participant_id)
    assert session is not None
    assert [x.kind for x in session.producers.values()] == ["audio"]
    assert {c.producer.kind for c in session.consumers.values()} == {"audio"}
    assert firefox.frames_from(doctor.participant_id, "video") == 0

    # The others are unharmed: H.264 both ways, from a keyframe, and a later negotiation
    # (someone new) keeps the rejected m-lines out of the way.
    before = doctor.frames_from(patient.participant_id, "video")
    late = harness.bot(
        harness.token(consultation, Role.observer), video_codec="H264", video_codecs=["H264"]
    )
    await late.connect()
    assert await late.wait_for(
        lambda: (
            late.frames_from(doctor.participant_id, "video") > 30
            and late.frames_from(firefox.participant_id, "audio") > 30
        ),
        timeout=15,
    )
    assert doctor.frames_from(patient.participant_id, "video") > before + 30
    for bot in (doctor, patient, late):
        assert bot.errors == [] or [e.code for e in bot.errors] == ["forbidden"]
        for inbound in bot.inbound.values():
            if inbound.kind == "video" and inbound.frames:
                assert inbound.first_frame_was_keyframe
    assert firefox.bye is None and firefox.errors[1:] == []


async def test_a_room_runs_the_codec_its_first_participant_can_use(
    h264_server: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    harness = h264_server
    vp8_only = harness.bot(
        harness.token(consultation, Role.doctor),
        video=video_clip,
        audio=audio_clip,
        video_codecs=["VP8"],
    )
    await vp8_only.connect()
    room = harness.worker.room(consultation)
    assert room is not None and room.video_codec == "VP8"
    # Another who can do both (and says nothing, like an old page) joins the VP8 room.
    both = harness.bot(
        harness.token(consultation, Role.patient), video=video_clip, audio=audio_clip
    )
    await both.connect()
    assert await both.wait_for(
        lambda: (
            both.frames_from(vp8_only.participant_id, "video") > 30
            and vp8_only.frames_from(both.participant_id, "video") > 30
        ),
        timeout=15,
    )
    assert {x.mime_type for x in room.producers.values()} == {"video/VP8", "audio/opus"}
    # A later joiner who can only do H.264 gets audio, and is told why.
    h264_only = harness.bot(
        harness.token(consultation, Role.expert), audio=audio_clip, video_codecs=["H264", "AV1"]
    )
    await h264_only.connect()
    assert await h264_only.wait_for(
        lambda: h264_only.frames_from(vp8_only.participant_id, "audio") > 30, timeout=15
    )
    assert [e.code for e in h264_only.errors] == ["video_unavailable"]
    assert h264_only.frames_from(vp8_only.participant_id, "video") == 0
    assert all(i.kind == "audio" for i in h264_only.inbound.values())
