"""Recording never slows a call: consent floods and slow disks stay off the forwarding loop.

The server runs in this test's own event loop, so a ticker task here measures exactly the
lag the Worker's forwarding sees.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

import recordings.writer_thread as writer_thread_mod
from media.clips import Clip
from recordings.catalog import Catalog
from recordings.crypto import EncryptedWriter
from recordings.manifest import Manifest
from rooms.consultation import new_consultation_id
from rooms.roles import Role
from signaling import protocol as p
from signaling.bot import Bot
from tests.integration.conftest import Harness

WINDOW_S = 10.0
FPS = 30


def _states(bot: Bot) -> list[p.RecordingState]:
    return [e for e in bot.events if isinstance(e, p.RecordingState)]


def _asked(bot: Bot) -> bool:
    return any(isinstance(e, p.ConsentRequest) for e in bot.events)


@dataclass
class LoopLag:
    """Ticks every 20 ms and keeps how late each tick woke: the event loop's lag."""

    worst_s: float = 0.0
    samples: list[float] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.02)
            lag = time.monotonic() - before - 0.02
            self.samples.append(lag)
            self.worst_s = max(self.worst_s, lag)


@dataclass
class Health:
    """Polls /healthz every 250 ms and keeps the slowest answer."""

    url: str
    worst_s: float = 0.0
    answers: int = 0

    async def run(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                started = time.monotonic()
                async with http.get(self.url) as r:
                    assert r.status == 200
                    await r.read()
                self.worst_s = max(self.worst_s, time.monotonic() - started)
                self.answers += 1
                await asyncio.sleep(0.25)


async def _during(seconds: float, *watchers: Callable[[], Awaitable[None]]) -> None:
    tasks = [asyncio.create_task(w()) for w in watchers]
    try:
        await asyncio.sleep(seconds)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass


async def _recorded(harness: Harness, consultation: str, timeout_s: float = 30.0) -> Manifest:
    """The recording's final manifest, once its writer thread has closed every file."""
    (info,) = await harness.closed_recordings(consultation, timeout_s)
    return Catalog(harness.server.recording_store).manifest(consultation, info.recording)


async def _start_recording(doctor: Bot, patients: list[Bot]) -> None:
    await doctor.send(p.Record(type="record", action="start"))
    for patient in patients:
        assert await patient.wait_for(lambda patient=patient: _asked(patient), 5)
        await patient.send(p.Consent(type="consent", granted=True))
    assert await doctor.wait_for(
        lambda: bool(_states(doctor)) and _states(doctor)[-1].state == "recording", 5
    )


async def test_consent_flood_slows_neither_call_and_is_limited(
    harness: Harness, video_clip: Clip, audio_clip: Clip
) -> None:
    first, second = new_consultation_id(), new_consultation_id()
    media = {"video": video_clip, "audio": audio_clip}
    doctor = harness.bot(harness.token(first, Role.doctor), **media)
    hostile = harness.bot(harness.token(first, Role.patient), **media)
    honest = harness.bot(harness.token(first, Role.observer))
    other_publisher = harness.bot(harness.token(second, Role.doctor), video=video_clip)
    other_subscriber = harness.bot(harness.token(second, Role.observer))
    for bot in (doctor, hostile, honest, other_publisher, other_subscriber):
        await bot.connect()

    def watched() -> tuple[int, int]:
        return (
            honest.frames_from(doctor.participant_id, "video"),
            other_subscriber.frames_from(other_publisher.participant_id, "video"),
        )

    assert await doctor.wait_for(lambda: min(watched()) > 10, 15)
    await _start_recording(doctor, [hostile])

    async def toggle() -> None:
        granted = False
        while True:
            await hostile.send(p.Consent(type="consent", granted=granted))
            granted = not granted
            await asyncio.sleep(1 / 45)

    lag = LoopLag()
    health = Health(harness.base_url + "/healthz")
    before = watched()
    await _during(WINDOW_S, toggle, lag.run, health.run)
    after = watched()

    # Both subscribers kept (about) the publishers' 30 fps through the flood.
    expected = FPS * WINDOW_S
    assert after[0] - before[0] >= 0.85 * expected, (before, after)
    assert after[1] - before[1] >= 0.85 * expected, (before, after)
    assert health.answers >= 10 and health.worst_s < 0.5, health
    assert lag.worst_s < 0.25, lag.worst_s
    refused = [e for e in hostile.errors if e.code == "rate_limited" and e.ref == "consent"]
    assert len(refused) > 300, len(hostile.errors)

    await doctor.send(p.Record(type="record", action="stop"))
    assert await doctor.wait_for(lambda: _states(doctor)[-1].state == "stopped", 5)
    manifest = await _recorded(harness, first)
    hostile_tracks = [t for t in manifest.tracks if t.participant == hostile.participant_id]
    # Burst 4: at most two withdraw/grant rounds after the first segment, per kind.
    assert 2 <= len(hostile_tracks) <= 6, [(t.kind, t.stop_reason) for t in hostile_tracks]
    changes = [c for c in manifest.consent if c.participant == hostile.participant_id]
    assert len(changes) <= 1 + 4 + 1, len(changes)  # the first yes, the burst, one refill
    (doctor_video,) = [
        t for t in manifest.tracks if t.participant == doctor.participant_id and t.kind == "video"
    ]
    assert doctor_video.state == "complete" and doctor_video.frames >= expected * 0.85


async def test_slow_disk_blocks_nothing_and_shows_as_a_gap(
    harness: Harness,
    consultation: str,
    video_clip: Clip,
    audio_clip: Clip,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every write to disk of every recording file (media and manifest) takes 0.3 s.
    emit = EncryptedWriter._emit
    loop_thread = threading.get_ident()
    on_loop: list[int] = []

    def slow_emit(self: EncryptedWriter, record: bytes) -> None:
        if threading.get_ident() == loop_thread:
            on_loop.append(len(record))
        time.sleep(0.3)
        emit(self, record)

    monkeypatch.setattr(EncryptedWriter, "_emit", slow_emit)
    # A smaller queue than a server's, so it fills (and drains after the stop) sooner.
    monkeypatch.setattr(writer_thread_mod, "MAX_QUEUED_BYTES", 256 * 1024)

    media = {"video": video_clip, "audio": audio_clip}
    doctor = harness.bot(harness.token(consultation, Role.doctor), **media)
    patient = harness.bot(harness.token(consultation, Role.patient), **media)
    for bot in (doctor, patient):
        await bot.connect()

    def watched() -> tuple[int, int]:
        return (
            doctor.frames_from(patient.participant_id, "video"),
            patient.frames_from(doctor.participant_id, "video"),
        )

    assert await doctor.wait_for(lambda: min(watched()) > 10, 15)
    lag = LoopLag()
    before = watched()
    await _during(0.5, lag.run)
    await _start_recording(doctor, [patient])
    await _during(WINDOW_S - 0.5, lag.run)
    after = watched()

    # Not one 0.3 s write ever ran on the loop, and the call went on at full rate.
    assert on_loop == []
    # Under the 0.3 s of one write: a write on the loop would show; a busy machine's hiccup
    # (this runs beside other suites on shared cores) need not.
    assert lag.worst_s < 0.29, lag.worst_s
    expected = FPS * WINDOW_S
    assert after[0] - before[0] >= 0.85 * expected, (before, after)
    assert after[1] - before[1] >= 0.85 * expected, (before, after)

    await doctor.send(p.Record(type="record", action="stop"))
    assert await doctor.wait_for(lambda: _states(doctor)[-1].state == "stopped", 5)
    manifest = await _recorded(harness, consultation, timeout_s=90)
    assert manifest.state == "complete"
    gaps = [e for e in manifest.events if e["type"] == "gap"]
    assert gaps, manifest.events
    track_ids = {t.id for t in manifest.tracks}
    assert all(g["track"] in track_ids and g["dropped"] > 0 for g in gaps)
    videos = [t for t in manifest.tracks if t.kind == "video"]
    # What fitted was written, and each video track resumed after its gap.
    # How many frames fit depends on where the clip's keyframes (one every 5 s) fall against
    # the gaps: each track is whole, and each wrote video from a keyframe on.
    assert len(videos) == 2
    assert all(
        t.state == "complete" and t.keyframes >= 1 and t.frames > t.keyframes for t in videos
    )
    assert sum(t.dropped for t in manifest.tracks) >= sum(g["dropped"] for g in gaps)
