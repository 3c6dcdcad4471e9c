"""RecorderThread: the loop only enqueues; a full queue drops frames, never waits."""

from __future__ import annotations

import asyncio
import os
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from media.clips import Clip, vp8_clip
from recordings.crypto import EncryptedWriter
from recordings.manifest import Manifest
from recordings.store import RecordingStore
from recordings.writer_thread import RecorderThread

CONSULTATION = "consult-thread-01"
VIDEO_TB = Fraction(1, 90000)


@pytest.fixture(scope="module")
def video() -> Clip:
    return vp8_clip(seconds=3.0, keyframe_every_s=1.0)


@pytest.fixture
def store(tmp_path: Path) -> RecordingStore:
    return RecordingStore(tmp_path / "data", master_key=os.urandom(32))


class Events:
    """What the thread reported, and on which thread it was delivered."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.threads: set[int] = set()

    def __call__(self, event: dict[str, Any]) -> None:
        self.seen.append(event)
        self.threads.add(threading.get_ident())

    def types(self) -> list[str]:
        return [e["type"] for e in self.seen]


def _manifest(store: RecordingStore, rec: RecorderThread) -> Manifest:
    key = store.keystore.data_key(CONSULTATION)
    return Manifest.load(store.manifest_path(CONSULTATION, rec.recording), key)


def _feed(rec: RecorderThread, video: Clip, start: int, count: int) -> list[bool]:
    keys = set(video.keyframe_indices)
    return [
        rec.write("v1", video.frames[i % len(video.frames)], i * 3000, VIDEO_TB, i in keys)
        for i in range(start, start + count)
    ]


async def test_commands_run_on_the_thread_and_events_come_back_to_the_loop(
    store: RecordingStore, video: Clip
) -> None:
    events = Events()
    rec = RecorderThread(store, CONSULTATION, on_event=events)
    rec.consent("Pdoc", True, "doctor")
    assert not rec.write("v1", video.frames[0], 0, VIDEO_TB, True)  # not started: dropped
    rec.start({"Pdoc": "doctor"})
    rec.add_track("v1", "Pdoc", "doctor", "video", "video/VP8")
    assert all(_feed(rec, video, 0, len(video.frames)))
    rec.stop("stopped")
    await asyncio.wait_for(rec.done, 30)
    await asyncio.sleep(0)  # events posted just before the end
    assert events.types() == ["recording_started", "keyframe_needed", "recording_stopped"]
    assert events.seen[1]["producer"] == "v1"
    assert events.threads == {threading.get_ident()}  # delivered on the loop's thread
    m = _manifest(store, rec)
    assert m.state == "complete" and m.tracks[0].frames == len(video.frames)
    assert rec.dropped == 0


async def test_a_start_refused_on_the_thread_is_reported(store: RecordingStore) -> None:
    events = Events()
    rec = RecorderThread(store, CONSULTATION, on_event=events)
    rec.start({"Pdoc": "doctor"})  # no consent recorded: the Recorder refuses
    for _ in range(500):
        if events.seen:
            break
        await asyncio.sleep(0.01)
    assert events.seen == [{"type": "start_failed", "reason": "consent_required"}]
    rec.stop("consent_required")
    await asyncio.wait_for(rec.done, 10)
    assert not store.consultation_dir(CONSULTATION).exists()


async def test_a_stalled_disk_drops_frames_and_never_blocks_the_caller(
    store: RecordingStore, video: Clip, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The disk hangs on every write until released (bounded, so a bug fails, not hangs).
    disk_free = threading.Event()
    emit = EncryptedWriter._emit

    def stalled_emit(self: EncryptedWriter, record: bytes) -> None:
        assert disk_free.wait(30), "the disk was never released"
        emit(self, record)

    monkeypatch.setattr(EncryptedWriter, "_emit", stalled_emit)
    events = Events()
    rec = RecorderThread(
        store, CONSULTATION, on_event=events, max_queued_frames=40, max_queued_bytes=1 << 30
    )
    rec.consent("Pdoc", True, "doctor")
    rec.consent("Ppat", True, "patient")
    rec.start({"Pdoc": "doctor", "Ppat": "patient"})
    rec.add_track("v1", "Pdoc", "doctor", "video", "vp8")
    # The thread is stuck in the start (the key file is not ours, the manifest is): every
    # call below returns at once, or this test would never get past it.
    accepted = _feed(rec, video, 0, 60)
    assert accepted == [True] * 40 + [False] * 20
    assert rec.dropped == 20
    # Commands still get through a full queue: a withdrawal is never lost.
    rec.consent("Ppat", False, "patient")
    disk_free.set()
    for _ in range(1000):  # wait for the thread to drain below half the queue
        if rec.queued_bytes == 0:
            break
        await asyncio.sleep(0.01)
    assert rec.queued_bytes == 0
    assert all(_feed(rec, video, 60, 30))  # 60 is a keyframe: the track resumes there
    rec.stop("stopped")
    await asyncio.wait_for(rec.done, 30)

    m = _manifest(store, rec)
    (t,) = m.tracks
    (gap,) = [e for e in m.events if e["type"] == "gap"]
    assert (gap["producer"], gap["dropped"], gap["track"]) == ("v1", 20, t.id)
    assert t.frames == 70 and t.dropped == 20
    assert [(c.participant, c.granted) for c in m.consent][-1] == ("Ppat", False)
