"""Mute is enforced by the server: a client that says "muted" and keeps sending (a modified
page, a hostile client) reaches nobody."""

from __future__ import annotations

import asyncio

from media.clips import Clip
from rooms.roles import Role
from signaling import protocol as p
from tests.integration.conftest import Harness


async def test_a_muted_participant_is_not_heard_even_if_it_keeps_sending(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    media = {"video": video_clip, "audio": audio_clip}
    patient = harness.bot(harness.token(consultation, Role.patient), **media)
    doctor = harness.bot(harness.token(consultation, Role.doctor), **media)
    await patient.connect()
    await doctor.connect()
    pid = patient.participant_id
    assert await doctor.wait_for(lambda: doctor.frames_from(pid, "audio") > 20, 15)

    # The bot's tracks keep sending: only the message says muted.
    await patient.send(p.Mute(type="mute", kind="audio", muted=True))
    assert await doctor.wait_for(
        lambda: any(isinstance(e, p.MuteChanged) and e.muted for e in doctor.events), 5
    )
    await asyncio.sleep(0.3)
    heard, seen = doctor.frames_from(pid, "audio"), doctor.frames_from(pid, "video")
    await asyncio.sleep(1.5)
    assert doctor.frames_from(pid, "audio") == heard
    assert doctor.frames_from(pid, "video") > seen + 30
    (producer,) = [x for x in harness.worker.room(consultation).producers.values()  # type: ignore[union-attr]
                   if x.participant_id == pid and x.kind == "audio"]  # fmt: skip
    assert producer.paused and producer.frames_paused > 30

    await patient.send(p.Mute(type="mute", kind="audio", muted=False))
    assert await doctor.wait_for(lambda: doctor.frames_from(pid, "audio") > heard + 20, 5)
