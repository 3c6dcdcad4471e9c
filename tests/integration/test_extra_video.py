"""Extra video tracks (a screen share, a second camera) through the signaling server, with
aiortc bots: everyone receives them next to the camera, counted per Producer; the
permission, the limit and the subscription policy hold; stopping one stops its packets."""

from __future__ import annotations

import asyncio

import pytest

from media.clips import Clip
from recordings.catalog import Catalog
from rooms.roles import Role
from signaling import protocol as p
from signaling.bot import Bot
from tests.integration.conftest import Harness

TIMEOUT = 15.0


def _errors(bot: Bot, ref: str) -> list[p.Error]:
    return [e for e in bot.errors if e.ref == ref]


def _announced(bot: Bot, kind: type[p._Message], source: str) -> list[p._Message]:
    return [e for e in bot.events if isinstance(e, kind) and getattr(e, "source", None) == source]


async def _grows(bot: Bot, producer_id: str, seconds: float = 1.2) -> int:
    before = bot.frames_of(producer_id)
    await asyncio.sleep(seconds)
    return bot.frames_of(producer_id) - before


async def test_a_screen_share_reaches_everyone_beside_the_camera_and_stops(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    media = {"video": video_clip, "audio": audio_clip}
    doctor = harness.bot(harness.token(consultation, Role.doctor), **media)
    patient = harness.bot(harness.token(consultation, Role.patient), **media)
    observer = harness.bot(harness.token(consultation, Role.observer))
    for bot in (doctor, patient, observer):
        await bot.connect()
    did = doctor.participant_id
    assert did is not None
    assert await observer.wait_for(lambda: observer.frames_from(did, "video") > 10, TIMEOUT)

    await doctor.publish_extra("screen", video_clip)
    assert await observer.wait_for(lambda: bool(observer.published(did, "screen")), TIMEOUT)
    (screen,) = observer.published(did, "screen")
    (camera,) = observer.published(did, "camera")
    assert patient.published(did, "screen") == [screen]  # everyone is told, with the source
    for bot in (patient, observer):
        assert await bot.wait_for(lambda b=bot: b.frames_of(screen) > 30, TIMEOUT)
        assert await bot.wait_for(lambda b=bot: b.frames_of(camera) > 30, TIMEOUT)
    # Forwarded, not transcoded: the screen's frames are the clip's, byte for byte.
    sizes = {len(f) for f in video_clip.frames}
    inbound = next(i for i in observer.inbound.values() if i.producer_id == screen)
    assert inbound.source == "screen" and inbound.bytes > 0
    assert inbound.frames and inbound.bytes / inbound.frames <= max(sizes)

    # Audio-only mode holds for the new Producer too: no screen either.
    await observer.send(p.VideoPolicy(type="video_policy", mode="audio_only"))
    await asyncio.sleep(0.5)
    assert await _grows(observer, screen) == 0 and await _grows(observer, camera) == 0
    await observer.send(p.VideoPolicy(type="video_policy", mode="all"))
    assert await observer.wait_for(lambda: observer.frames_of(screen) > 0, TIMEOUT)
    assert await _grows(observer, screen) > 15

    # Turning the camera off leaves the share on; muting the share leaves the camera.
    await doctor.send(p.Mute(type="mute", kind="video", muted=True))
    await asyncio.sleep(0.5)
    assert await _grows(patient, camera) == 0 and await _grows(patient, screen) > 15
    await doctor.send(p.Mute(type="mute", kind="video", muted=False))
    await doctor.send(p.Mute(type="mute", kind="video", muted=True, source="screen"))
    await asyncio.sleep(0.5)
    assert await _grows(patient, screen) == 0 and await _grows(patient, camera) > 15
    await doctor.send(p.Mute(type="mute", kind="video", muted=False, source="screen"))
    assert await patient.wait_for(lambda: patient.frames_of(screen) > 0, TIMEOUT)

    await doctor.unpublish_extra("screen")
    assert await patient.wait_for(
        lambda: bool(_announced(patient, p.TrackUnpublished, "screen")), TIMEOUT
    )
    await asyncio.sleep(0.5)
    assert await _grows(patient, screen) == 0 and await _grows(patient, camera) > 15
    assert harness.worker.room(consultation).producers.keys() >= {camera}  # type: ignore[union-attr]
    assert screen not in harness.worker.room(consultation).producers  # type: ignore[union-attr]

    # Shared again: a new Producer on the same m-line, received again.
    before = len(doctor.pc.getTransceivers())  # type: ignore[union-attr]
    await doctor.publish_extra("screen", video_clip)
    assert await patient.wait_for(lambda: len(patient.published(did, "screen")) == 2, TIMEOUT)
    again = patient.published(did, "screen")[-1]
    assert again != screen
    assert await patient.wait_for(lambda: patient.frames_of(again) > 20, TIMEOUT)
    assert len(doctor.pc.getTransceivers()) == before  # type: ignore[union-attr]
    assert doctor.errors == []


async def test_who_may_publish_what_and_how_many(
    harness: Harness,
    consultation: str,
    video_clip: Clip,
    audio_clip: Clip,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    media = {"video": video_clip, "audio": audio_clip}
    nurse = harness.bot(harness.token(consultation, Role.nurse), **media)
    patient = harness.bot(harness.token(consultation, Role.patient), **media)
    observer = harness.bot(harness.token(consultation, Role.observer))
    for bot in (nurse, patient, observer):
        await bot.connect()
    pid = patient.participant_id
    assert pid is not None

    # A patient may not share the screen; an observer publishes nothing.
    await patient.publish_extra("screen", video_clip)
    await observer.publish_extra("camera2", video_clip)
    assert await patient.wait_for(lambda: bool(_errors(patient, "publish_extra")), 5)
    assert await observer.wait_for(lambda: bool(_errors(observer, "publish_extra")), 5)
    assert _errors(patient, "publish_extra")[0].code == "forbidden"
    assert _errors(observer, "publish_extra")[0].code == "forbidden"
    patient.errors.clear()

    # A patient's second camera (a wound close-up) reaches the others.
    await patient.publish_extra("camera2", video_clip)
    assert await nurse.wait_for(lambda: bool(nurse.published(pid, "camera2")), TIMEOUT)
    (second,) = nurse.published(pid, "camera2")
    assert await nurse.wait_for(lambda: nurse.frames_of(second) > 20, TIMEOUT)
    assert await observer.wait_for(lambda: observer.frames_of(second) > 20, TIMEOUT)

    # Twice the same source, or past the limit (lowered to one here): typed errors.
    await patient.publish_extra("camera2", video_clip)
    assert await patient.wait_for(lambda: bool(_errors(patient, "publish_extra")), 5)
    assert _errors(patient, "publish_extra")[0].code == "unexpected"
    monkeypatch.setattr("signaling.room.extra_video.MAX_EXTRA_PRODUCERS", 1)
    await nurse.publish_extra("screen", video_clip)
    await nurse.publish_extra("camera2", video_clip)
    assert await nurse.wait_for(lambda: bool(_errors(nurse, "publish_extra")), 5)
    assert [e.code for e in _errors(nurse, "publish_extra")] == ["too_many_producers"]
    await nurse.unpublish_extra("screen")
    await nurse.unpublish_extra("screen")
    assert await nurse.wait_for(lambda: bool(_errors(nurse, "unpublish_extra")), 5)
    assert _errors(nurse, "unpublish_extra")[0].code == "unexpected"

    # Leaving takes the extra Producer with it.
    await patient.close()
    assert await nurse.wait_for(
        lambda: any(
            isinstance(e, p.TrackUnpublished) and e.producerId == second for e in nurse.events
        ),
        TIMEOUT,
    )


async def test_a_screen_share_is_recorded_as_a_track_of_its_own(
    harness: Harness, consultation: str, video_clip: Clip
) -> None:
    doctor = harness.bot(harness.token(consultation, Role.doctor), video=video_clip)
    patient = harness.bot(harness.token(consultation, Role.patient), video=video_clip)
    for bot in (doctor, patient):
        await bot.connect()
    did = doctor.participant_id
    assert did is not None
    assert await patient.wait_for(lambda: patient.frames_from(did, "video") > 5, TIMEOUT)
    await doctor.send(p.Record(type="record", action="start"))
    assert await patient.wait_for(
        lambda: any(isinstance(e, p.ConsentRequest) for e in patient.events), 5
    )
    await patient.send(p.Consent(type="consent", granted=True))

    def recording() -> bool:
        states = [e for e in doctor.events if isinstance(e, p.RecordingState)]
        return bool(states) and states[-1].state == "recording"

    assert await doctor.wait_for(recording, 5)
    await doctor.publish_extra("screen", video_clip)
    assert await patient.wait_for(lambda: bool(patient.published(did, "screen")), TIMEOUT)
    (screen,) = patient.published(did, "screen")
    assert await patient.wait_for(lambda: patient.frames_of(screen) > 30, TIMEOUT)
    await doctor.send(p.Record(type="record", action="stop"))
    (info,) = await harness.closed_recordings(consultation)
    manifest = Catalog(harness.server.recording_store).manifest(consultation, info.recording)
    mine = {t.producer: t.frames for t in manifest.tracks if t.participant == did}
    assert mine.get(screen, 0) > 20
    assert len([f for f in mine.values() if f]) == 2  # the camera and the screen


async def test_a_new_media_session_asks_for_the_same_extra_tracks_again(
    harness: Harness, consultation: str, video_clip: Clip
) -> None:
    nurse = harness.bot(harness.token(consultation, Role.nurse), video=video_clip)
    expert = harness.bot(harness.token(consultation, Role.expert), video=video_clip)
    for bot in (nurse, expert):
        await bot.connect()
    nid = nurse.participant_id
    assert nid is not None
    await nurse.publish_extra("camera2", video_clip)
    assert await expert.wait_for(lambda: bool(expert.published(nid, "camera2")), TIMEOUT)
    (first,) = expert.published(nid, "camera2")
    assert await expert.wait_for(lambda: expert.frames_of(first) > 10, TIMEOUT)

    await nurse.restart_media()  # as after a network switch: a new connection
    assert await nurse.wait_for(lambda: nurse.media_resets == 1, TIMEOUT)
    assert await expert.wait_for(lambda: len(expert.published(nid, "camera2")) == 2, TIMEOUT)
    second = expert.published(nid, "camera2")[-1]
    assert await expert.wait_for(lambda: expert.frames_of(second) > 20, TIMEOUT)
    assert nurse.errors == []
