"""kill -9 a recording process mid-way: verify reports truncation, the rest decrypts.

No server: a child process feeds a Recorder as the Worker's Producer hook would, and is
killed with SIGKILL (no cleanup of any kind runs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from media.clips import Clip, opus_clip, vp8_clip
from recordings.catalog import Catalog
from recordings.crypto import MASTER_KEY_ENV, iter_plaintext, open_decrypted
from recordings.errors import TruncatedError
from recordings.retention import Retention
from recordings.store import RecordingStore

CONSULTATION = "consult-crash1"

CHILD = """
import sys, time
from fractions import Fraction
from pathlib import Path
from media.clips import opus_clip, vp8_clip
from recordings.recorder import Recorder
from recordings.store import RecordingStore

store = RecordingStore(Path(sys.argv[1]))
video, audio = vp8_clip(seconds=10.0), opus_clip(seconds=10.0)
rec = Recorder(store, sys.argv[2])
rec.consent("Pdoc", True, role="doctor")
rec.start({"Pdoc": "doctor"})
rec.add_track("v", "Pdoc", "doctor", "video", "video/VP8")
rec.add_track("a", "Pdoc", "doctor", "audio", "audio/opus")
for i in range(300):
    rec.write("v", video.frames[i], i * 3000, Fraction(1, 90000), i == 0)
    for j in range(i * 5 // 3, (i + 1) * 5 // 3):
        rec.write("a", audio.frames[j], j * 960, Fraction(1, 48000), True)
    if i == 150:
        # Five seconds of media fed in a fraction of one: save the manifest as the writer
        # thread would have by now (saves are coalesced to one a second).
        rec.save_manifest()
        print(rec.recording, flush=True)  # five seconds recorded: kill me now
    if i >= 150:
        time.sleep(0.05)
rec.stop()
print("finished", flush=True)
"""


@pytest.fixture(scope="module")
def clips() -> tuple[Clip, Clip]:
    # Built (and cached on disk) here, so the child does not spend its time encoding.
    return vp8_clip(seconds=10.0), opus_clip(seconds=10.0)


def test_kill_9_mid_recording(tmp_path: Path, clips: tuple[Clip, Clip]) -> None:
    video, _ = clips
    master = os.urandom(32)
    env = {**os.environ, MASTER_KEY_ENV: master.hex()}
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), CONSULTATION],
        stdout=subprocess.PIPE,
        env=env,
        cwd=root,
        text=True,
    )
    try:
        assert child.stdout is not None
        recording = child.stdout.readline().strip()
        assert recording.startswith("R"), recording
        time.sleep(0.3)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    store = RecordingStore(tmp_path, master_key=master)
    report = Retention(store).verify()
    assert [p.recording for p in report.of_kind("unfinished")] == [recording]
    truncated = sorted(Path(p.path).name for p in report.of_kind("truncated"))
    assert truncated == ["01-video.webm.enc", "02-audio.webm.enc"], report.problems
    # Truncated, not damaged: nothing reads as tampered or reordered.
    assert {p.kind for p in report.problems} <= {"unfinished", "truncated"}
    (info,) = Catalog(store).list(CONSULTATION)
    assert info.state == "recording" and info.truncated

    key = store.keystore.data_key(CONSULTATION)
    path = store.recording_dir(CONSULTATION, recording) / "01-video.webm.enc"
    got = 0
    with pytest.raises(TruncatedError) as e:
        for chunk in iter_plaintext(path, key):
            got += len(chunk)
    assert got == e.value.readable_bytes > 0
    # Everything up to the last complete chunk decrypts and demuxes to the frames sent,
    # byte for byte: at least the four seconds sealed before the kill signal was even due.
    with av.open(open_decrypted(path, key, allow_truncated=True)) as c:
        packets = []
        try:
            packets = [bytes(p) for p in c.demux(video=0) if p.size]
        except av.error.FFmpegError:
            pass
    assert len(packets) >= 120, len(packets)
    assert packets == list(video.frames[: len(packets)])
    with av.open(open_decrypted(path, key, allow_truncated=True)) as c:
        decoded = 0
        try:
            for _ in c.decode(video=0):
                decoded += 1
        except av.error.FFmpegError:
            pass
    assert decoded >= 120

    for f in store.root.rglob("*"):
        if f.is_file():
            assert b"\x1a\x45\xdf\xa3" not in f.read_bytes(), f
