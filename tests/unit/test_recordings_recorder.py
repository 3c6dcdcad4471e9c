"""Recorder and track writer: remux without re-encoding, consent, keyframes, disk full."""

from __future__ import annotations

import errno
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

import recordings.recorder as recorder_mod
from media.clips import Clip, opus_clip, vp8_clip
from recordings.crypto import EncryptedWriter, decrypt_to_bytes, open_decrypted
from recordings.errors import ConsentError, TruncatedError
from recordings.manifest import Manifest
from recordings.recorder import Recorder
from recordings.store import RecordingStore
from recordings.track_writer import TrackWriter, h264_sps, vp8_dimensions

CONSULTATION = "consult-rec-01"
VIDEO_TB = Fraction(1, 90000)
AUDIO_TB = Fraction(1, 48000)
# Where the worker clock might be after a day of uptime: tracks keep their absolute pts.
BASE = 90000 * 86400

SIGNATURES = {
    "EBML (WebM/Matroska)": b"\x1a\x45\xdf\xa3",
    "MP4 ftyp": b"ftyp",
    "Matroska DocType": b"matroska",
    "WebM DocType": b"webm",
    "VP8 keyframe start code": b"\x9d\x01\x2a",
}


@pytest.fixture(scope="module")
def video() -> Clip:
    return vp8_clip(seconds=3.0, keyframe_every_s=2.0)


@pytest.fixture(scope="module")
def audio() -> Clip:
    return opus_clip(seconds=3.0)


@pytest.fixture
def store(tmp_path: Path) -> RecordingStore:
    return RecordingStore(tmp_path / "data", master_key=os.urandom(32))


def scan_for_plaintext(root: Path) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            hits += [f"{path}: {what}" for what, sig in SIGNATURES.items() if sig in raw]
    return hits


def feed_video(
    rec: Recorder, pid: str, clip: Clip, start: int = 0, count: int | None = None
) -> None:
    frames = clip.frames[start : None if count is None else start + count]
    for i, data in enumerate(frames, start):
        keyframe = vp8_dimensions(data) is not None
        rec.write(pid, data, BASE + i * clip.ticks_per_frame, VIDEO_TB, keyframe)


def feed_audio(rec: Recorder, pid: str, clip: Clip) -> None:
    for i, data in enumerate(clip.frames):
        rec.write(pid, data, BASE * 48000 // 90000 + i * clip.ticks_per_frame, AUDIO_TB, True)


def demux(path: Path, key: bytes) -> tuple[Any, list[bytes]]:
    with av.open(open_decrypted(path, key)) as c:
        stream = c.streams[0]
        info = {
            "codec": stream.codec_context.name,
            "width": getattr(stream.codec_context, "width", None),
            "height": getattr(stream.codec_context, "height", None),
        }
        packets = [bytes(p) for p in c.demux(stream) if p.size]
    return info, packets


# --- track writer -------------------------------------------------------------------------


def test_vp8_track_is_remuxed_not_reencoded(tmp_path: Path, video: Clip) -> None:
    key = os.urandom(32)
    path = tmp_path / "v.webm.enc"
    tw = TrackWriter(EncryptedWriter.create(path, key), "video", "video/VP8")
    for i, data in enumerate(video.frames):
        assert tw.write(data, BASE + i * 3000, VIDEO_TB, i == 0)
    tw.close()
    assert tw.stats.params == {"codec": "vp8", "container": "webm", "width": 640, "height": 480}
    info, packets = demux(path, key)
    assert (info["codec"], info["width"], info["height"]) == ("vp8", video.width, video.height)
    # Byte-identical: the frames were muxed, never decoded and re-encoded.
    assert packets == list(video.frames)
    with av.open(open_decrypted(path, key)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == len(video.frames)
    assert (frames[0].width, frames[0].height) == (video.width, video.height)
    # The worker clock survives the remux (Matroska stores milliseconds).
    assert abs(float(frames[0].time) - BASE / 90000) < 0.002


def test_opus_track_is_remuxed(tmp_path: Path, audio: Clip) -> None:
    key = os.urandom(32)
    path = tmp_path / "a.webm.enc"
    tw = TrackWriter(EncryptedWriter.create(path, key), "audio", "audio/opus")
    for i, data in enumerate(audio.frames):
        tw.write(data, i * 960, AUDIO_TB, True)
    tw.close()
    info, packets = demux(path, key)
    assert info["codec"] == "opus" and packets == list(audio.frames)
    with av.open(open_decrypted(path, key)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    assert samples == len(audio.frames) * 960


def _h264_frames(width: int, height: int, count: int) -> list[bytes]:
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = Fraction(1, 30)
    enc.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline"}
    enc.gop_size = 10
    out: list[bytes] = []
    for i in range(count):
        img = np.full((height, width, 3), (i * 7) % 255, np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in enc.encode(frame)]
    out += [bytes(p) for p in enc.encode(None)]
    return out


def _nal_payloads(annexb: bytes) -> list[bytes]:
    return [u.rstrip(b"\0") for u in annexb.split(b"\x00\x00\x01") if u.rstrip(b"\0")]


def test_h264_track_in_matroska_keeps_nal_units(tmp_path: Path) -> None:
    # 180 is not a multiple of 16: the SPS carries cropping, which the parser must apply.
    frames = _h264_frames(320, 180, 30)
    sps = h264_sps(frames[0])
    assert sps is not None and (sps.width, sps.height) == (320, 180)
    key = os.urandom(32)
    path = tmp_path / "v.mkv.enc"
    tw = TrackWriter(EncryptedWriter.create(path, key), "video", "H264")
    for i, data in enumerate(frames):
        tw.write(data, i * 3000, VIDEO_TB, i % 10 == 0)
    tw.close()
    assert tw.stats.params["width"] == 320 and tw.stats.params["container"] == "matroska"
    info, packets = demux(path, key)
    assert (info["codec"], info["width"], info["height"]) == ("h264", 320, 180)
    # Matroska stores length-prefixed NAL units: compare the units, not the framing.
    assert len(packets) == len(frames)
    for got, sent in zip(packets, frames, strict=True):
        units, pos = [], 0
        while pos < len(got):
            n = int.from_bytes(got[pos : pos + 4], "big")
            units.append(got[pos + 4 : pos + 4 + n])
            pos += 4 + n
        sent_units = [u for u in _nal_payloads(sent) if u[0] & 0x1F not in (7, 8)]
        assert [u for u in units if u[0] & 0x1F not in (7, 8)] == sent_units


def test_video_track_starts_at_a_keyframe(tmp_path: Path, video: Clip) -> None:
    key = os.urandom(32)
    path = tmp_path / "v.enc"
    tw = TrackWriter(EncryptedWriter.create(path, key), "video", "vp8")
    # Joining mid-stream: deltas come first and are dropped. (The clip has one keyframe,
    # frame 0, so the stream "restarts" from it with later timestamps.)
    for i in range(1, 11):
        assert not tw.write(video.frames[i], i * 3000, VIDEO_TB, False)
    assert tw.write(video.frames[0], 11 * 3000, VIDEO_TB, True)
    for i in range(1, 20):
        assert tw.write(video.frames[i], (11 + i) * 3000, VIDEO_TB, False)
    # A timestamp going back is dropped, not muxed out of order.
    assert not tw.write(video.frames[20], 20 * 3000, VIDEO_TB, False)
    tw.close()
    assert tw.stats.dropped == 11 and tw.stats.frames == 20
    assert tw.stats.first_pts == 11 * 3000
    with av.open(open_decrypted(path, key)) as c:
        assert len(list(c.decode(video=0))) == 20


# --- recorder -----------------------------------------------------------------------------


def consented_recorder(store: RecordingStore, events: list[dict[str, Any]]) -> Recorder:
    rec = Recorder(store, CONSULTATION, on_event=events.append)
    rec.consent("Pdoc", True, role="doctor")
    rec.consent("Ppat", True, role="patient")
    rec.start({"Pdoc": "doctor", "Ppat": "patient"})
    return rec


def test_recording_round_trip_and_manifest(store: RecordingStore, video: Clip, audio: Clip) -> None:
    events: list[dict[str, Any]] = []
    rec = consented_recorder(store, events)
    assert rec.add_track("v1", "Pdoc", "doctor", "video", "video/VP8")
    assert rec.add_track("a1", "Pdoc", "doctor", "audio", "audio/opus")
    feed_video(rec, "v1", video)
    feed_audio(rec, "a1", audio)
    # Mid-recording, nothing on disk is plaintext either.
    assert scan_for_plaintext(store.root) == []
    manifest = rec.stop()
    assert [e["type"] for e in events] == ["recording_started", "recording_stopped"]
    assert scan_for_plaintext(store.root) == []

    key = store.keystore.data_key(CONSULTATION)
    loaded = Manifest.load(store.manifest_path(CONSULTATION, rec.recording), key)
    assert loaded == manifest and loaded.state == "complete" and not loaded.truncated
    assert loaded.participants == {"Pdoc": "doctor", "Ppat": "patient"}
    assert [(c.participant, c.granted) for c in loaded.consent] == [
        ("Pdoc", True),
        ("Ppat", True),
    ]
    v, a = loaded.tracks
    assert (v.kind, v.codec, v.role, v.participant, v.state) == (
        "video",
        "vp8",
        "doctor",
        "Pdoc",
        "complete",
    )
    assert v.params["width"] == 640 and v.params["height"] == 480
    assert v.frames == len(video.frames) and v.start_pts == BASE
    assert a.params["sample_rate"] == 48000 and a.frames == len(audio.frames)
    # One clock: the audio and video tracks start at the same instant.
    assert v.start_s is not None and a.start_s is not None and abs(v.start_s - a.start_s) < 1e-3
    import hashlib

    for t in loaded.tracks:
        assert t.file is not None
        path = store.recording_dir(CONSULTATION, rec.recording) / t.file
        assert hashlib.sha256(path.read_bytes()).hexdigest() == t.sha256
        assert path.stat().st_size == t.size
    _, packets = demux(store.recording_dir(CONSULTATION, rec.recording) / v.file, key)
    assert packets == list(video.frames)


def test_start_refused_without_everyones_consent(store: RecordingStore) -> None:
    rec = Recorder(store, CONSULTATION)
    rec.consent("Pdoc", True, role="doctor")
    rec.consent("Pexp", False, role="expert")
    with pytest.raises(ConsentError) as e:
        rec.start(["Pdoc", "Pexp", "Ppat"])
    assert "Pexp" in str(e.value) and "Ppat" in str(e.value) and "Pdoc" not in str(e.value)
    assert rec.state == "idle"
    assert not store.consultation_dir(CONSULTATION).exists()


def test_late_joiner_excluded_until_consent_and_withdrawal_stops(
    store: RecordingStore, video: Clip
) -> None:
    rec = consented_recorder(store, [])
    asked: list[str] = []
    assert not rec.add_track(
        "v2", "Plate", "expert", "video", "vp8", request_keyframe=lambda: asked.append("v2")
    )
    feed_video(rec, "v2", video, 0, 30)  # not consented: dropped
    assert rec.manifest.excluded[-1].participant == "Plate"
    assert rec.manifest.excluded[-1].reason == "no_consent"
    assert rec.manifest.tracks == []

    rec.consent("Plate", True)
    assert asked == ["v2"]  # the new segment asks for a keyframe at once
    feed_video(rec, "v2", video, 30, 30)  # deltas: wait for a keyframe
    key = video.keyframe_indices[1]
    rec.write("v2", video.frames[key], BASE + 60 * 3000, VIDEO_TB, True)
    feed_video(rec, "v2", video, 61, 29)
    rec.consent("Plate", False)
    feed_video(rec, "v2", video, 90, 30)  # withdrawn: dropped again
    m = rec.stop()
    (t,) = m.tracks
    assert t.participant == "Plate" and t.frames == 30 and t.dropped == 30
    assert t.stop_reason == "consent_withdrawn" and t.state == "complete"
    assert m.excluded[-1].reason == "consent_withdrawn"
    assert [(c.participant, c.granted) for c in m.consent][-2:] == [
        ("Plate", True),
        ("Plate", False),
    ]


class _Disk:
    """A shared byte budget for every file the recorder opens: the disk fills up."""

    def __init__(self, room: int) -> None:
        self.room = room

    def create(self, path: Path, key: bytes, **kw: Any) -> EncryptedWriter:
        disk = self

        class Raw:
            def __init__(self) -> None:
                self.f = open(path, "xb", buffering=0)

            def write(self, b: bytes) -> int:
                if len(b) > disk.room:
                    self.f.write(b[: disk.room])
                    disk.room = 0
                    raise OSError(errno.ENOSPC, "No space left on device", str(path))
                disk.room -= len(b)
                return self.f.write(b)

            def truncate(self, n: int) -> int:
                return self.f.truncate(n)

            def fileno(self) -> int:
                return self.f.fileno()

            def close(self) -> None:
                self.f.close()

        return EncryptedWriter(Raw(), key, name=path, **kw)


def test_disk_full_stops_cleanly_keeping_what_was_written(
    store: RecordingStore, video: Clip, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[dict[str, Any]] = []
    rec = consented_recorder(store, events)
    monkeypatch.setattr(recorder_mod, "EncryptedWriter", _Disk(150_000))
    rec.add_track("v1", "Pdoc", "doctor", "video", "vp8")
    feed_video(rec, "v1", video)  # ~300 kB: the disk fills part way
    assert rec.state == "stopped_disk_full"
    assert events[-1]["type"] == "recording_stopped" and events[-1]["reason"] == "disk_full"
    assert not rec.write("v1", video.frames[5], BASE + 10**6, VIDEO_TB, False)  # no raise
    rec.stop()  # harmless after the stop

    key = store.keystore.data_key(CONSULTATION)
    m = Manifest.load(store.manifest_path(CONSULTATION, rec.recording), key)
    (t,) = m.tracks
    assert m.state == "stopped_disk_full" and t.state == "truncated" and m.truncated
    assert t.stop_reason == "disk_full"
    path = store.recording_dir(CONSULTATION, rec.recording) / str(t.file)
    with pytest.raises(TruncatedError):
        decrypt_to_bytes(path, key)
    # What reached the disk decodes: most of the first second of video survived.
    reader = open_decrypted(path, key, allow_truncated=True)
    with av.open(reader) as c:
        decoded = 0
        try:
            for _ in c.decode(video=0):
                decoded += 1
        except av.error.FFmpegError:
            pass  # the cut may fall inside a frame
    assert 20 <= decoded <= t.frames


def test_tracks_added_before_start_are_recorded_from_the_start(
    store: RecordingStore, video: Clip
) -> None:
    rec = Recorder(store, CONSULTATION)
    assert not rec.add_track("v1", "Pdoc", "doctor", "video", "vp8")
    assert not rec.add_track("v2", "Pobs", "observer", "video", "vp8")
    assert not rec.write("v1", video.frames[0], BASE, VIDEO_TB, True)  # not started: dropped
    rec.consent("Pdoc", True, role="doctor")
    rec.start(["Pdoc"])  # the observer is not "present" as a consenting party here
    feed_video(rec, "v1", video, 0, 30)
    feed_video(rec, "v2", video, 0, 30)
    m = rec.stop()
    assert [(t.producer, t.frames) for t in m.tracks] == [("v1", 30)]
    assert [(x.producer, x.reason) for x in m.excluded] == [("v2", "no_consent")]


# --- a bad frame from one track, a gap, the manifest's pace ------------------------------


def _sized(keyframe: bytes, width: int, height: int) -> bytes:
    """The same VP8 keyframe with another size in its header."""
    size = width.to_bytes(2, "little") + height.to_bytes(2, "little")
    return keyframe[:6] + size + keyframe[10:]


@pytest.mark.parametrize(("width", "height"), [(0, 0), (640, 0), (16000, 16000)])
def test_a_keyframe_with_no_usable_size_cannot_start_a_file(
    tmp_path: Path, video: Clip, width: int, height: int
) -> None:
    key = os.urandom(32)
    path = tmp_path / "v.enc"
    tw = TrackWriter(EncryptedWriter.create(path, key), "video", "vp8")
    assert not tw.write(_sized(video.frames[0], width, height), 0, VIDEO_TB, True)
    assert not tw.write(video.frames[1], 3000, VIDEO_TB, False)
    assert not tw.started and tw.stats.dropped == 2
    # The next good keyframe starts the file as usual.
    assert tw.write(video.frames[0], 6000, VIDEO_TB, True)
    assert tw.write(video.frames[1], 9000, VIDEO_TB, False)
    tw.close()
    _, packets = demux(path, key)
    assert packets == list(video.frames[:2])


def test_a_keyframe_with_no_size_does_not_stop_the_recording(
    store: RecordingStore, video: Clip, audio: Clip
) -> None:
    events: list[dict[str, Any]] = []
    rec = consented_recorder(store, events)
    rec.add_track("v1", "Pdoc", "doctor", "video", "vp8")
    rec.add_track("v2", "Ppat", "patient", "video", "vp8")
    rec.add_track("a2", "Ppat", "patient", "audio", "opus")
    assert not rec.write("v2", _sized(video.frames[0], 0, 0), BASE, VIDEO_TB, True)
    feed_video(rec, "v1", video)
    feed_audio(rec, "a2", audio)
    assert rec.state == "recording"
    m = rec.stop()
    assert m.state == "complete" and [e["type"] for e in events][-1] == "recording_stopped"
    frames = {t.producer: t.frames for t in m.tracks}
    assert frames == {"v1": len(video.frames), "v2": 0, "a2": len(audio.frames)}
    assert next(t for t in m.tracks if t.producer == "v2").dropped == 1


def test_a_frame_the_muxer_refuses_closes_only_its_own_track(
    store: RecordingStore, video: Clip
) -> None:
    h264 = _h264_frames(320, 180, 20)
    units = [u for u in _nal_payloads(h264[0]) if u[0] & 0x1F != 8]
    no_pps = b"".join(b"\x00\x00\x00\x01" + u for u in units)  # SPS, no PPS: no avcC
    events: list[dict[str, Any]] = []
    rec = consented_recorder(store, events)
    rec.add_track("v1", "Pdoc", "doctor", "video", "vp8")
    rec.add_track("v2", "Ppat", "patient", "video", "h264")
    feed_video(rec, "v1", video, 0, 30)
    assert not rec.write("v2", no_pps, BASE, VIDEO_TB, True)
    assert rec.state == "recording"
    assert not rec.write("v2", h264[1], BASE + 3000, VIDEO_TB, False)  # the track is closed
    feed_video(rec, "v1", video, 30)
    m = rec.stop()
    assert m.state == "complete" and events[-1]["reason"] == "stopped"
    good, bad = m.tracks
    assert good.state == "complete" and good.frames == len(video.frames)
    assert (bad.state, bad.stop_reason, bad.frames) == ("truncated", "mux_error", 0)
    (error,) = [e for e in m.events if e["type"] == "track_error"]
    assert error["track"] == bad.id and "InvalidData" in error["detail"]
    key = store.keystore.data_key(CONSULTATION)
    d = store.recording_dir(CONSULTATION, rec.recording)
    _, packets = demux(d / str(good.file), key)
    assert packets == list(video.frames)
    with pytest.raises(TruncatedError):
        decrypt_to_bytes(d / str(bad.file), key)


def test_a_gap_is_listed_and_video_resumes_at_a_keyframe(
    store: RecordingStore, video: Clip
) -> None:
    rec = consented_recorder(store, [])
    asked: list[str] = []
    rec.add_track(
        "v1", "Pdoc", "doctor", "video", "vp8", request_keyframe=lambda: asked.append("v1")
    )
    feed_video(rec, "v1", video, 0, 20)
    rec.gap("v1", 10)  # frames 20..29 never arrived
    assert asked == ["v1", "v1"]  # at the segment's start, and after the gap
    feed_video(rec, "v1", video, 30, 30)  # deltas: they would not decode after the hole
    k = video.keyframe_indices[1]
    assert rec.write("v1", video.frames[k], BASE + 60 * 3000, VIDEO_TB, True)
    feed_video(rec, "v1", video, 61, 9)
    m = rec.stop()
    (t,) = m.tracks
    assert t.frames == 20 + 1 + 9 and t.dropped == 10 + 30
    (gap,) = [e for e in m.events if e["type"] == "gap"]
    assert (gap["track"], gap["producer"], gap["dropped"]) == (t.id, "v1", 10)
    # Every frame written decodes: the hole was jumped at a keyframe.
    path = store.recording_dir(CONSULTATION, rec.recording) / str(t.file)
    with av.open(open_decrypted(path, store.keystore.data_key(CONSULTATION))) as c:
        assert len(list(c.decode(video=0))) == 30


class _Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_manifest_saves_are_coalesced_to_one_a_second(
    store: RecordingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    saves: list[float] = []
    real_save = Manifest.save
    ticks = _Ticks()

    def counted(self: Manifest, path: Path, data_key: bytes) -> None:
        saves.append(ticks.now)
        real_save(self, path, data_key)

    monkeypatch.setattr(Manifest, "save", counted)
    rec = Recorder(store, CONSULTATION, monotonic=ticks)
    rec.consent("Pdoc", True, role="doctor")
    rec.consent("Ppat", True, role="patient")
    rec.start({"Pdoc": "doctor", "Ppat": "patient"})
    rec.add_track("a2", "Ppat", "patient", "audio", "opus")
    assert saves == [0.0]
    for i in range(200):  # a consent flood within one second: each change closes a file
        ticks.now = i / 400
        rec.consent("Ppat", i % 2 == 1)
    assert saves == [0.0]
    assert rec.manifest_due_in() == pytest.approx(1.0 - ticks.now)
    ticks.now = 1.0
    assert rec.manifest_due_in() == 0
    rec.save_manifest()
    assert saves == [0.0, 1.0] and rec.manifest_due_in() is None
    key = store.keystore.data_key(CONSULTATION)
    on_disk = Manifest.load(store.manifest_path(CONSULTATION, rec.recording), key)
    assert len(on_disk.consent) == 2 + 200
    ticks.now = 1.1
    rec.stop()  # the stop is written at once
    assert saves == [0.0, 1.0, 1.1]
