"""Consent-gated recording through the real protocol, Worker and Recorder, with aiortc bots."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json

import av
import pytest

from media.clips import Clip
from recordings.catalog import Catalog
from recordings.crypto import load_master_key, open_decrypted
from recordings.store import RecordingStore
from rooms.roles import Role
from signaling import protocol as p
from signaling.audit.verify import verify as verify_audit
from signaling.bot import Bot
from tests.integration.conftest import Harness


def _states(bot: Bot) -> list[p.RecordingState]:
    return [e for e in bot.events if isinstance(e, p.RecordingState)]


def _asked(bot: Bot) -> bool:
    return any(isinstance(e, p.ConsentRequest) for e in bot.events)


async def _consent(bot: Bot, granted: bool = True) -> None:
    await bot.send(p.Consent(type="consent", granted=granted))


async def _record_two(
    harness: Harness, consultation: str, doctor_token: str, **media: Clip
) -> tuple[Bot, Bot]:
    """A doctor and a consenting patient in a call that is being recorded."""
    doctor = harness.bot(doctor_token, **media)
    patient = harness.bot(harness.token(consultation, Role.patient), **media)
    for bot in (doctor, patient):
        await bot.connect()
    assert await doctor.wait_for(
        lambda: doctor.frames_from(patient.participant_id, "video") > 5, 10
    )
    await doctor.send(p.Record(type="record", action="start"))
    assert await patient.wait_for(lambda: _asked(patient), 5)
    await _consent(patient)
    assert await doctor.wait_for(lambda: _states(doctor)[-1].state == "recording", 5)
    return doctor, patient


async def test_recording_waits_for_everyone_and_leaves_out_a_late_joiner(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    media = {"video": video_clip, "audio": audio_clip}
    doctor = harness.bot(harness.token(consultation, Role.doctor, name="Dr. Li 李"), **media)
    expert = harness.bot(harness.token(consultation, Role.expert), **media)
    patient = harness.bot(harness.token(consultation, Role.patient, name="张阿姨"), **media)
    for bot in (doctor, expert, patient):
        await bot.connect()
    assert await doctor.wait_for(
        lambda: doctor.frames_from(patient.participant_id, "video") > 5, 10
    )

    await doctor.send(p.Record(type="record", action="start"))
    assert await expert.wait_for(lambda: _asked(expert) and _asked(patient), 5)
    assert not _asked(doctor)  # asking is the doctor's own consent
    await _consent(expert)
    await asyncio.sleep(0.3)
    # One answer missing: not recording yet.
    assert all(s.state == "pending" for s in _states(doctor))
    assert _states(doctor)[-1].waitingFor == [patient.participant_id]
    await _consent(patient)
    assert await doctor.wait_for(
        lambda: bool(_states(doctor)) and _states(doctor)[-1].state == "recording", 5
    )
    assert _states(patient)[-1].state == "recording"  # everyone sees REC

    late = harness.bot(harness.token(consultation, Role.expert), **media)
    await late.connect()
    assert await late.wait_for(lambda: _asked(late), 5)
    # Everyone sees who is left out, not only the newcomer.
    assert await doctor.wait_for(lambda: _states(doctor)[-1].excluded == [late.participant_id], 5)
    assert _states(doctor)[-1].startedAt is not None
    await asyncio.sleep(2.0)  # records 2 s; the late joiner never answers
    await doctor.send(p.Record(type="record", action="stop"))
    assert await doctor.wait_for(lambda: _states(doctor)[-1].state == "stopped", 5)

    store = harness.server.recording_store
    (info,) = await harness.closed_recordings(consultation)
    assert info.state == "complete" and not info.truncated
    manifest = Catalog(store).manifest(consultation, info.recording)
    recorded = {(t.participant, t.kind) for t in manifest.tracks if t.frames}
    assert recorded == {
        (b.participant_id, kind) for b in (doctor, expert, patient) for kind in ("audio", "video")
    }
    assert {x.participant for x in manifest.excluded} == {late.participant_id}
    # Every track knows whose role it is (the composer labels tiles by role).
    roles = {
        b.participant_id: r
        for b, r in ((doctor, "doctor"), (expert, "expert"), (patient, "patient"))
    }
    assert all(t.role == roles[t.participant] for t in manifest.tracks if t.frames), manifest.tracks
    consented = {c.participant for c in manifest.consent if c.granted}
    assert consented == {doctor.participant_id, expert.participant_id, patient.participant_id}

    # Each video file decrypts and demuxes to the publisher's frames, byte for byte.
    key = store.keystore.data_key(consultation)
    rec_dir = store.recording_dir(consultation, info.recording)
    clip_frames = set(video_clip.frames)
    for track in manifest.tracks:
        if track.kind != "video" or not track.file:
            continue
        with av.open(open_decrypted(rec_dir / track.file, key)) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.width, stream.codec_context.height) == (640, 480)
            packets = [bytes(pk) for pk in container.demux(stream) if pk.size]
        assert len(packets) >= 30 and set(packets) <= clip_frames

    # Nothing on disk in plaintext, and no name anywhere in the audit log.
    for path in store.root.rglob("*"):
        if path.is_file():
            head = path.read_bytes()[:64]
            assert b"\x1a\x45\xdf\xa3" not in head and b"ftyp" not in head, path
    assert harness.server.audit.flush()
    log_text = harness.server.audit.path.read_text()
    # Decoded too: lines are ASCII, a name would be there as \u escapes.
    decoded = json.dumps([json.loads(line) for line in log_text.splitlines()], ensure_ascii=False)
    for text in (log_text, decoded):
        assert "李" not in text and "张阿姨" not in text and "Dr. Li" not in text
    report = verify_audit(harness.server.audit.path, load_master_key(harness.config.data_dir))
    assert report.ok and report.entries == len(log_text.splitlines()), report.findings
    actions = [json.loads(line)["action"] for line in log_text.splitlines()]
    assert actions.count("recording_consent") == 3
    assert "recording_started" in actions and "recording_stopped" in actions


async def test_one_refusal_cancels_and_nothing_is_recorded(
    harness: Harness, consultation: str, video_clip: Clip
) -> None:
    doctor = harness.bot(harness.token(consultation, Role.doctor), video=video_clip)
    patient = harness.bot(harness.token(consultation, Role.patient), video=video_clip)
    for bot in (doctor, patient):
        await bot.connect()
    await doctor.send(p.Record(type="record", action="start"))
    assert await patient.wait_for(lambda: _asked(patient), 5)
    await _consent(patient, granted=False)
    assert await doctor.wait_for(lambda: any(e.code == "consent_refused" for e in doctor.errors), 5)
    assert _states(doctor)[-1].state == "idle" and _states(doctor)[-1].reason == "declined"
    store = harness.server.recording_store
    assert all(not info.tracks for info in Catalog(store).list(consultation))
    assert harness.room(consultation) is None or harness.room(consultation).recording is None  # type: ignore[union-attr]


async def test_observers_are_not_asked_and_do_not_hold_up_the_start(
    harness: Harness, consultation: str, video_clip: Clip
) -> None:
    doctor = harness.bot(harness.token(consultation, Role.doctor), video=video_clip)
    observer = harness.bot(harness.token(consultation, Role.observer))
    for bot in (doctor, observer):
        await bot.connect()
    await doctor.send(p.Record(type="record", action="start"))
    assert await doctor.wait_for(
        lambda: bool(_states(doctor)) and _states(doctor)[-1].state == "recording", 5
    )
    assert not _asked(observer) and _states(observer)[-1].state == "recording"
    await doctor.send(p.Record(type="record", action="stop"))
    assert await doctor.wait_for(lambda: _states(doctor)[-1].state == "stopped", 5)
    assert _states(doctor)[-1].reason == "stopped"
    assert _states(doctor)[-1].by == doctor.participant_id


async def test_only_the_doctor_may_record_and_consent_needs_a_request(
    harness: Harness, consultation: str
) -> None:
    expert = harness.bot(harness.token(consultation, Role.expert))
    await expert.connect()
    await expert.send(p.Record(type="record", action="start"))
    await _consent(expert)
    assert await expert.wait_for(lambda: len(expert.errors) == 2, 5)
    assert [e.code for e in expert.errors] == ["forbidden", "unexpected"]


async def test_withdrawing_consent_stops_that_participants_tracks(
    harness: Harness, consultation: str, video_clip: Clip
) -> None:
    doctor_token = harness.token(consultation, Role.doctor)
    doctor, patient = await _record_two(harness, consultation, doctor_token, video=video_clip)
    await asyncio.sleep(1.5)
    await _consent(patient, granted=False)
    assert await doctor.wait_for(
        lambda: _states(doctor)[-1].excluded == [patient.participant_id], 5
    )
    await asyncio.sleep(1.0)
    await doctor.send(p.Record(type="record", action="stop"))
    assert await doctor.wait_for(lambda: _states(doctor)[-1].state == "stopped", 5)
    store = harness.server.recording_store
    (info,) = await harness.closed_recordings(consultation)
    manifest = Catalog(store).manifest(consultation, info.recording)
    (patient_track,) = [t for t in manifest.tracks if t.participant == patient.participant_id]
    assert patient_track.stop_reason == "consent_withdrawn"
    (doctor_track,) = [t for t in manifest.tracks if t.participant == doctor.participant_id]
    assert doctor_track.frames > patient_track.frames


async def test_recordings_api_composes_and_streams_only_to_permitted_roles(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    import io
    import time

    import aiohttp

    doctor_token = harness.token(consultation, Role.doctor)
    patient_token = harness.token(consultation, Role.patient)
    doctor, _ = await _record_two(
        harness, consultation, doctor_token, video=video_clip, audio=audio_clip
    )
    started = time.monotonic()
    await asyncio.sleep(4.0)
    await doctor.send(p.Record(type="record", action="stop"))
    assert await doctor.wait_for(lambda: _states(doctor)[-1].state == "stopped", 5)
    recorded_s = time.monotonic() - started
    await harness.closed_recordings(consultation)

    base = f"{harness.base_url}/api/consultations/{consultation}/recordings"
    other = harness.token("another-consultation", Role.doctor)
    async with aiohttp.ClientSession() as http:

        def auth(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        async with http.get(base) as r:
            assert r.status == 401
        async with http.get(base, headers=auth(patient_token)) as r:
            assert r.status == 403
        async with http.get(base, headers=auth(other)) as r:
            assert r.status == 403
        async with http.get(base, headers=auth(doctor_token)) as r:
            assert r.status == 200
            (info,) = (await r.json())["recordings"]
        recording = info["recording"]
        async with http.post(f"{base}/{recording}/compose", headers=auth(doctor_token)) as r:
            assert r.status == 202
        deadline = time.monotonic() + 90
        while True:
            async with http.get(f"{base}/{recording}/compose", headers=auth(doctor_token)) as r:
                job = await r.json()
            if job["state"] != "running" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert job == {"state": "done", "progress": 100.0}

        url = f"{base}/{recording}/composed"
        async with http.get(url, headers={**auth(doctor_token), "Range": "bytes=0-99"}) as r:
            assert r.status == 206 and len(await r.read()) == 100
            assert r.headers["Content-Range"].startswith("bytes 0-99/")
        async with http.get(url, params={"token": doctor_token, "download": "1"}) as r:
            assert r.status == 200
            body = await r.read()

    with av.open(io.BytesIO(body)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
        assert container.streams.audio, "the composed file has no audio"
    duration = frames / float(video.average_rate or 30)
    assert abs(duration - recorded_s) / recorded_s < 0.25, (duration, recorded_s)
    actions = [e["action"] for e in harness.server.audit.entries()]
    for action in (
        "recordings_listed",
        "recording_compose",
        "recording_played",
        "recording_downloaded",
    ):
        assert action in actions


async def test_a_keyframe_with_no_size_leaves_the_recording_running(
    harness: Harness, consultation: str, video_clip: Clip
) -> None:
    # Every keyframe of this clip claims a 0x0 picture (the size bytes of its VP8 header).
    frames = list(video_clip.frames)
    for i in video_clip.keyframe_indices:
        frames[i] = frames[i][:6] + b"\x00\x00\x00\x00" + frames[i][10:]
    broken = dataclasses.replace(video_clip, frames=tuple(frames))
    doctor_token = harness.token(consultation, Role.doctor)
    doctor, patient = await _record_two(harness, consultation, doctor_token, video=video_clip)
    sender = harness.bot(harness.token(consultation, Role.expert), video=broken)
    await sender.connect()
    assert await sender.wait_for(lambda: _asked(sender), 5)
    await _consent(sender)
    assert await doctor.wait_for(lambda: _states(doctor)[-1].excluded == [], 5)
    assert await doctor.wait_for(
        lambda: doctor.frames_from(sender.participant_id, "video") > 45, 10
    )
    assert _states(doctor)[-1].state == "recording"
    await doctor.send(p.Record(type="record", action="stop"))
    assert await doctor.wait_for(lambda: _states(doctor)[-1].state == "stopped", 5)
    assert _states(doctor)[-1].reason == "stopped"

    (info,) = await harness.closed_recordings(consultation)
    assert info.state == "complete"
    manifest = Catalog(harness.server.recording_store).manifest(consultation, info.recording)
    frames_by = {t.participant: t.frames for t in manifest.tracks}
    assert frames_by[doctor.participant_id] > 30 and frames_by[patient.participant_id] > 30
    (bad,) = [t for t in manifest.tracks if t.participant == sender.participant_id]
    assert bad.frames == 0 and bad.dropped > 0


async def test_a_start_that_fails_on_the_writer_thread_is_reported(
    harness: Harness, consultation: str, video_clip: Clip, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_room(*_: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(RecordingStore, "create_recording_dir", no_room)
    doctor = harness.bot(harness.token(consultation, Role.doctor), video=video_clip)
    await doctor.connect()
    await doctor.send(p.Record(type="record", action="start"))
    assert await doctor.wait_for(lambda: bool(doctor.errors), 5)
    assert [e.code for e in doctor.errors] == ["recording_failed"]
    assert await doctor.wait_for(lambda: _states(doctor)[-1].state == "idle", 5)
    assert _states(doctor)[-1].reason == "failed"
    assert harness.room(consultation) is None or harness.room(consultation).recording is None  # type: ignore[union-attr]
    # The call goes on, and a new request is possible.
    monkeypatch.undo()
    await doctor.send(p.Record(type="record", action="start"))
    assert await doctor.wait_for(lambda: _states(doctor)[-1].state == "recording", 5)


async def test_only_those_asked_may_answer_a_pending_request(
    harness: Harness, consultation: str, video_clip: Clip
) -> None:
    doctor = harness.bot(harness.token(consultation, Role.doctor), video=video_clip)
    patient = harness.bot(harness.token(consultation, Role.patient), video=video_clip)
    observer = harness.bot(harness.token(consultation, Role.observer))
    for bot in (doctor, patient, observer):
        await bot.connect()
    await doctor.send(p.Record(type="record", action="start"))
    assert await patient.wait_for(lambda: _asked(patient), 5)

    # Neither the observer (never asked) nor the asker may cancel it for everyone.
    await _consent(observer, granted=False)
    await _consent(doctor, granted=False)
    assert await observer.wait_for(lambda: bool(observer.errors), 5)
    assert await doctor.wait_for(lambda: bool(doctor.errors), 5)
    for bot in (observer, doctor):
        assert [(e.code, e.ref) for e in bot.errors] == [("forbidden", "consent")]
    assert _states(doctor)[-1].state == "pending"
    assert _states(doctor)[-1].waitingFor == [patient.participant_id]

    await _consent(patient)
    assert await doctor.wait_for(lambda: _states(doctor)[-1].state == "recording", 5)
    # Observers are not recorded, so not left out either, and cannot "withdraw".
    assert _states(doctor)[-1].excluded == []
    await _consent(observer, granted=False)
    assert await observer.wait_for(lambda: len(observer.errors) == 2, 5)
    assert (observer.errors[-1].code, observer.errors[-1].ref) == ("forbidden", "consent")
    # A publisher present may still withdraw and agree again.
    await _consent(patient, granted=False)
    assert await doctor.wait_for(
        lambda: _states(doctor)[-1].excluded == [patient.participant_id], 5
    )
    await _consent(patient, granted=True)
    assert await doctor.wait_for(lambda: _states(doctor)[-1].excluded == [], 5)
    assert not patient.errors
    await doctor.send(p.Record(type="record", action="stop"))
    assert await doctor.wait_for(lambda: _states(doctor)[-1].state == "stopped", 5)
    (info,) = await harness.closed_recordings(consultation)
    manifest = Catalog(harness.server.recording_store).manifest(consultation, info.recording)
    assert observer.participant_id not in {c.participant for c in manifest.consent}


async def test_someone_asked_who_leaves_without_answering_does_not_block_the_start(
    harness: Harness, consultation: str, video_clip: Clip
) -> None:
    doctor = harness.bot(harness.token(consultation, Role.doctor), video=video_clip)
    patient = harness.bot(harness.token(consultation, Role.patient), video=video_clip)
    expert = harness.bot(harness.token(consultation, Role.expert), video=video_clip)
    for bot in (doctor, patient, expert):
        await bot.connect()
    await doctor.send(p.Record(type="record", action="start"))
    assert await expert.wait_for(lambda: _asked(expert) and _asked(patient), 5)
    await expert.close()
    assert await doctor.wait_for(
        lambda: _states(doctor)[-1].waitingFor == [patient.participant_id], 5
    )
    await _consent(patient)
    assert await doctor.wait_for(lambda: _states(doctor)[-1].state == "recording", 5)
    await asyncio.sleep(0.5)
    assert _states(doctor)[-1].state == "recording", _states(doctor)[-1]
    await doctor.send(p.Record(type="record", action="stop"))
    assert await doctor.wait_for(lambda: _states(doctor)[-1].state == "stopped", 5)
    (info,) = await harness.closed_recordings(consultation)
    assert info.state == "complete" and info.participants == 2
