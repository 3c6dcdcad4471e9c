"""Composer: three recorded participants -> one encrypted MP4 grid with mixed audio.

No server: the tracks are fed to a Recorder directly, as the Producer hook would.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import av
import numpy as np
import pytest

from recordings.bench import ROLES, record_synthetic_call
from recordings.composer import ComposeOptions, compose
from recordings.crypto import open_decrypted
from recordings.manifest import Manifest
from recordings.store import COMPOSED_NAME, RecordingStore

SECONDS = 10.0
CONSULTATION = "consult-compose"


@pytest.fixture(scope="module")
def composed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    store = RecordingStore(tmp_path_factory.mktemp("data"), master_key=os.urandom(32))
    rec, _ = record_synthetic_call(store, CONSULTATION, seconds=SECONDS)
    progress: list[float] = []
    started = time.monotonic()
    entry = compose(store, CONSULTATION, rec.recording, progress=progress.append)
    wall = time.monotonic() - started
    key = store.keystore.data_key(CONSULTATION)
    path = store.recording_dir(CONSULTATION, rec.recording) / COMPOSED_NAME
    with av.open(open_decrypted(path, key)) as c:
        vs, aus = c.streams.video[0], c.streams.audio[0]
        info = (vs.codec_context.name, vs.width, vs.height, aus.codec_context.name)
    with av.open(open_decrypted(path, key)) as c:
        frames = [(float(f.time), f.to_ndarray(format="gray")) for f in c.decode(video=0)]
    with av.open(open_decrypted(path, key)) as c:
        audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
    return {
        "store": store,
        "recording": rec.recording,
        "entry": entry,
        "wall": wall,
        "progress": progress,
        "path": path,
        "info": info,
        "frames": frames,
        "audio": audio,
    }


def test_composed_mp4_decodes_as_h264_and_aac(composed: dict) -> None:
    assert composed["info"] == ("h264", 1280, 720, "aac")


def test_duration_within_ten_percent(composed: dict) -> None:
    frames = composed["frames"]
    duration = frames[-1][0] - frames[0][0] + 1 / ComposeOptions.fps
    assert abs(duration - SECONDS) / SECONDS < 0.10, duration
    audio_s = composed["audio"].shape[1] / 48000
    assert abs(audio_s - SECONDS) / SECONDS < 0.10, audio_s


def test_every_tile_holds_a_picture(composed: dict) -> None:
    entry = composed["entry"]
    assert sorted(t["label"] for t in entry.tiles) == sorted(ROLES.values())
    for when in (0.25, 0.5, 0.9):
        _, gray = composed["frames"][int(len(composed["frames"]) * when)]
        for tile in entry.tiles:
            x, y, w, h = tile["x"], tile["y"], tile["w"], tile["h"]
            # Below the label box: the picture itself. A blank tile is one flat grey.
            region = gray[y + h // 4 : y + h, x : x + w]
            assert region.std() > 20, (tile["label"], when, region.std())
            label_box = gray[y + 8 : y + 30, x + 8 : x + 60]
            assert label_box.min() < 40 and label_box.max() > 200, tile["label"]


def test_audio_is_mixed_not_silent(composed: dict) -> None:
    audio = composed["audio"]
    middle = audio[:, audio.shape[1] // 4 : 3 * audio.shape[1] // 4]
    rms = float(np.sqrt(np.mean(middle**2)))
    # Three 0.2-amplitude tones summed (offset by 0.1 s each), not one, not zero.
    assert 0.1 < rms < 1.0, rms


def test_progress_and_manifest(composed: dict) -> None:
    progress = composed["progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) >= 50
    store: RecordingStore = composed["store"]
    key = store.keystore.data_key(CONSULTATION)
    m = Manifest.load(store.manifest_path(CONSULTATION, composed["recording"]), key)
    assert m.composed is not None and m.composed.file == COMPOSED_NAME
    path: Path = composed["path"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == m.composed.sha256


def test_no_plaintext_anywhere(composed: dict) -> None:
    store: RecordingStore = composed["store"]
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert any(p.name == COMPOSED_NAME for p in files)
    for path in files:
        raw = path.read_bytes()
        for sig in (b"ftyp", b"moov", b"\x1a\x45\xdf\xa3", b"webm", b"matroska", b"OpusHead"):
            assert sig not in raw, (path, sig)
    # And no leftovers from the compose (partial or temporary files).
    assert not [p for p in files if p.name.startswith(".")]


def test_speed_is_reported(composed: dict) -> None:
    speed = composed["entry"].duration_s / composed["wall"]
    print(f"composer: {speed:.2f}x real time for 3 x 640x480")
    # The target is 2x (see recordings.bench); a loaded CI box still must beat real time.
    assert speed > 1.0
