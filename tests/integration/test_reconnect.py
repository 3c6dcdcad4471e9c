"""The reconnect ladder: a dropped signaling socket resumes the same session (media never
touched, nothing missed, nobody told the participant left); a failed media connection is
replaced by a new one on request, the session going on; only when neither can be does the
client join afresh."""

from __future__ import annotations

import asyncio
import time

from media.clips import Clip
from rooms.roles import Role
from signaling import protocol as p
from tests.integration.conftest import Harness


def _left(bot, participant_id: str | None) -> bool:  # type: ignore[no-untyped-def]
    return any(
        isinstance(e, p.ParticipantLeft) and e.participantId == participant_id for e in bot.events
    )


async def test_a_dropped_socket_resumes_the_same_session(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    media = {"video": video_clip, "audio": audio_clip}
    patient = harness.bot(harness.token(consultation, Role.patient), **media)
    doctor = harness.bot(harness.token(consultation, Role.doctor), **media)
    await patient.connect()
    await doctor.connect()
    pid = patient.participant_id
    assert await doctor.wait_for(lambda: doctor.frames_from(pid, "video") > 20, 10)
    pc = patient.pc

    await patient.drop_socket()
    await asyncio.sleep(0.3)  # the server notices the socket is gone and holds the session
    # Meanwhile the call goes on: the patient's media still flows, and something happens.
    before = doctor.frames_from(pid, "video")
    await doctor.send(p.Mute(type="mute", kind="audio", muted=True))
    assert await doctor.wait_for(lambda: doctor.frames_from(pid, "video") > before + 10, 5)

    assert await patient.resume() is True
    assert patient.participant_id == pid and patient.pc is pc  # the same session, same media
    # What was said while away arrives, and nobody was told the patient left.
    assert await patient.wait_for(
        lambda: any(isinstance(e, p.MuteChanged) and e.muted for e in patient.events), 5
    )
    assert not _left(doctor, pid)
    await patient.send(p.Ping(type="ping", ts=7.0))
    assert await patient.wait_for(
        lambda: any(isinstance(e, p.Pong) and e.ts == 7.0 for e in patient.events), 5
    )
    actions = [e["action"] for e in harness.server.audit.entries()]
    assert "resumed" in actions and actions.count("join") == 2


async def test_a_session_not_resumed_in_time_is_let_go_and_rejoined(
    harness: Harness, consultation: str, video_clip: Clip
) -> None:
    patient = harness.bot(harness.token(consultation, Role.patient), video=video_clip)
    doctor = harness.bot(harness.token(consultation, Role.doctor), video=video_clip)
    await patient.connect()
    await doctor.connect()
    pid = patient.participant_id
    await patient.drop_socket()
    # The harness holds a dropped session 1 s (20 s in production).
    assert await doctor.wait_for(lambda: _left(doctor, pid), 5)
    assert await patient.resume() is False  # too late: a new session instead
    assert patient.participant_id != pid
    assert await doctor.wait_for(
        lambda: doctor.frames_from(patient.participant_id, "video") > 10, 10
    )


async def test_a_stolen_resume_token_is_worth_nothing(
    harness: Harness, consultation: str, video_clip: Clip
) -> None:
    patient = harness.bot(harness.token(consultation, Role.patient), video=video_clip)
    await patient.connect()
    await patient.drop_socket()
    thief = harness.bot(harness.token(consultation, Role.observer))
    await thief.connect()
    thief.joined = patient.joined  # the patient's resume token, presented with another token
    assert await thief.resume() is False
    assert thief.participant_id != patient.participant_id


async def test_a_failed_media_connection_is_replaced_within_seconds(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    media = {"video": video_clip, "audio": audio_clip}
    frames: list[float] = []
    patient = harness.bot(
        harness.token(consultation, Role.patient),
        on_frame=lambda kind, who, data, now: frames.append(now) if kind == "video" else None,
        **media,
    )
    doctor = harness.bot(harness.token(consultation, Role.doctor), **media)
    await patient.connect()
    await doctor.connect()
    did = doctor.participant_id
    assert await patient.wait_for(lambda: patient.frames_from(did, "video") > 20, 10)

    # What a network switch does to the client: its media connection is gone.
    assert patient.pc is not None
    lost_at = time.monotonic()
    await patient.pc.close()
    await patient.restart_media()
    before = patient.frames_from(did, "video")
    assert await patient.wait_for(lambda: patient.frames_from(did, "video") > before + 20, 10)
    assert patient.media_resets == 1 and patient.bye is None
    first_after = next(t for t in frames if t > lost_at)
    assert first_after - lost_at <= 3.0
    # The doctor sees the patient again too, and nobody left.
    pid = patient.participant_id
    seen = doctor.frames_from(pid, "video")
    assert await doctor.wait_for(lambda: doctor.frames_from(pid, "video") > seen + 20, 10)
    assert not _left(doctor, pid)

    for _ in range(3):  # more than a restart every few seconds is refused
        await patient.restart_media()
    assert await patient.wait_for(
        lambda: any(e.code == "rate_limited" and e.ref == "media_restart" for e in patient.errors),
        5,
    )
