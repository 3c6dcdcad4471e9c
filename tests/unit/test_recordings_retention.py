"""Catalog, purge (crypto-shredding), legal hold, verify."""

from __future__ import annotations

import os
import shutil
import struct
from fractions import Fraction
from pathlib import Path

import av
import pytest

from media.clips import opus_clip, vp8_clip
from recordings.catalog import Catalog
from recordings.crypto import HEADER_SIZE, Keystore, decrypt_to_bytes
from recordings.errors import KeyDestroyedError, LegalHoldError
from recordings.recorder import Recorder
from recordings.retention import DAY_S, Retention
from recordings.store import RecordingStore

T0 = 1_700_000_000.0
A, B = "consult-aaaa01", "consult-bbbb02"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def master() -> bytes:
    return os.urandom(32)


@pytest.fixture
def store(tmp_path: Path, master: bytes) -> RecordingStore:
    return RecordingStore(tmp_path / "data", master_key=master)


def record(store: RecordingStore, consultation: str, clock: Clock) -> str:
    video, audio = vp8_clip(seconds=3.0), opus_clip(seconds=3.0)
    rec = Recorder(store, consultation, clock=clock)
    rec.consent("Pdoc", True, role="doctor")
    rec.start({"Pdoc": "doctor"})
    rec.add_track("v", "Pdoc", "doctor", "video", "vp8")
    rec.add_track("a", "Pdoc", "doctor", "audio", "opus")
    for i, data in enumerate(video.frames):
        rec.write("v", data, i * 3000, Fraction(1, 90000), i == 0)
    for i, data in enumerate(audio.frames):
        rec.write("a", data, i * 960, Fraction(1, 48000), True)
    rec.stop()
    return rec.recording


def track_files(store: RecordingStore, consultation: str, recording: str) -> list[Path]:
    d = store.recording_dir(consultation, recording)
    return sorted(p for p in d.iterdir() if p.name != "manifest.json.enc")


def test_catalog_lists_and_streams(store: RecordingStore, clock: Clock) -> None:
    rid = record(store, A, clock)
    catalog = Catalog(store)
    assert catalog.consultations() == [A]
    (info,) = catalog.list(A)
    assert (info.recording, info.state, info.tracks, info.participants) == (rid, "complete", 2, 1)
    assert not info.truncated and not info.composed and info.started_at == T0
    m = catalog.manifest(A, rid)
    video_file = next(t.file for t in m.tracks if t.kind == "video")
    assert video_file is not None
    with catalog.open(A, rid, video_file) as reader, av.open(reader) as c:
        assert c.streams.video[0].codec_context.name == "vp8"
    plain = b"".join(catalog.stream(A, rid, video_file))
    assert plain[:4] == b"\x1a\x45\xdf\xa3"
    # Only names the manifest lists: no traversal, no guessing.
    for bad in ("../../keys/" + A + ".key", "manifest.json.enc", "composed.mp4.enc"):
        with pytest.raises(FileNotFoundError):
            catalog.open(A, rid, bad)


def test_purge_shreds_old_consultations_only(
    store: RecordingStore, clock: Clock, tmp_path: Path, master: bytes
) -> None:
    rid_a = record(store, A, clock)
    clock.now = T0 + 20 * DAY_S
    record(store, B, clock)
    files_a = track_files(store, A, rid_a)
    key_a = store.keystore.data_key(A)
    assert decrypt_to_bytes(files_a[0], key_a)
    backup = tmp_path / "backup"
    shutil.copytree(store.recording_dir(A, rid_a), backup)

    clock.now = T0 + 31 * DAY_S
    report = Retention(store, clock=clock).purge(older_than_days=30)
    assert report.purged == [A] and report.kept == [B] and report.held == []
    assert not store.consultation_dir(A).exists()
    assert not store.keystore.path(A).exists()
    # A backup copy of the files is useless now: no key can be had for it.
    fresh = Keystore(store.keystore.keys_dir, master)
    with pytest.raises(KeyDestroyedError):
        fresh.data_key(A)
    assert Catalog(store).list(B)[0].state == "complete"


def test_legal_hold_prevents_purge(store: RecordingStore, clock: Clock) -> None:
    rid = record(store, A, clock)
    retention = Retention(store, clock=clock)
    retention.hold(A, reason="complaint 42")
    assert retention.is_held(A) and retention.holds() == [A]
    clock.now = T0 + 400 * DAY_S
    report = retention.purge(older_than_days=30)
    assert report.held == [A] and report.purged == []
    assert store.keystore.path(A).exists()
    assert Catalog(store).list(A)[0].recording == rid
    with pytest.raises(LegalHoldError, match=A):
        retention.purge_consultation(A)
    assert retention.release(A)
    assert retention.purge(older_than_days=30).purged == [A]
    assert not store.keystore.path(A).exists()


def test_verify_clean(store: RecordingStore, clock: Clock) -> None:
    record(store, A, clock)
    report = Retention(store).verify()
    assert report.ok and report.files_checked == 3


def _records(path: Path) -> list[int]:
    raw = path.read_bytes()
    out, pos = [], HEADER_SIZE
    while pos < len(raw):
        out.append(pos)
        pos += 4 + struct.unpack(">I", raw[pos : pos + 4])[0]
    return out


def test_verify_reports_damage(store: RecordingStore, clock: Clock) -> None:
    rid = record(store, A, clock)
    video, audio = track_files(store, A, rid)[:2]
    raw = bytearray(video.read_bytes())
    raw[_records(video)[1] + 100] ^= 0x04
    video.write_bytes(raw)
    audio.write_bytes(audio.read_bytes()[: _records(audio)[-1]])  # final chunk gone
    report = Retention(store).verify(A)
    kinds = {(Path(p.path).name, p.kind) for p in report.problems}
    assert (video.name, "hash_mismatch") in kinds and (video.name, "tampered") in kinds
    assert (audio.name, "hash_mismatch") in kinds and (audio.name, "truncated") in kinds
    video.unlink()
    assert Retention(store).verify(A).of_kind("missing")[0].path == str(video)


def test_verify_with_wrong_master_key(store: RecordingStore, clock: Clock) -> None:
    record(store, A, clock)
    wrong = RecordingStore(store.data_dir, master_key=os.urandom(32))
    report = Retention(wrong).verify()
    (problem,) = report.problems
    assert problem.kind == "wrong_key" and problem.path.endswith(f"{A}.key")
