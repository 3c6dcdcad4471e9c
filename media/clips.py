"""Pre-encoded synthetic media for bots, tests and the benchmark.

A bot that encodes live would put the encoder's cost on the machine's bill and, with
aiortc's encoder, turn every REMB change into a keyframe. So clips are encoded once, with a
keyframe every few seconds, as a WebRTC encoder that is rarely asked for one would. A
ClipTrack answers a keyframe request (PLI) at once by skipping ahead to the clip's next
keyframe: the picture jumps, the stream stays decodable. (Substituting an intra-coded
version of the next picture does not work: libvpx cannot decode the deltas after it.)
"""

from __future__ import annotations

import asyncio
import fractions
import hashlib
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media.codecs import TIME_BASE

VIDEO_FPS = 30
AUDIO_FRAME_S = 0.02


@dataclass(frozen=True)
class Clip:
    kind: str
    frames: tuple[bytes, ...]  # as streamed: frames[0] is a keyframe
    keyframe_indices: tuple[int, ...]  # where the keyframes are (video; audio: empty)
    ticks_per_frame: int  # in the codec clock (90 kHz video, 48 kHz audio)
    width: int = 0
    height: int = 0

    @property
    def duration_s(self) -> float:
        return len(self.frames) * self.ticks_per_frame / (90000 if self.kind == "video" else 48000)


def _cache_dir() -> Path:
    path = Path(os.environ.get("TELECONSULT_CLIP_CACHE", Path(tempfile.gettempdir()) / "tc-clips"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cached(key: str, make: Callable[[], Clip]) -> Clip:
    path = _cache_dir() / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".pickle")
    if path.exists():
        try:
            with path.open("rb") as f:
                clip = pickle.load(f)
            if isinstance(clip, Clip):
                return clip
        except Exception:
            pass
    clip = make()
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump(clip, f)
    tmp.replace(path)
    return clip


def _pictures(width: int, height: int, count: int) -> list[np.ndarray]:
    """A moving gradient with noise: costs a real encoder bits, like a camera does."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:height, 0:width]
    pictures = []
    for i in range(count):
        base = ((xx + 4 * i) % 256 + (yy // 2)) % 256
        noise = rng.integers(0, 6, size=(height, width))
        y = (base + noise).astype(np.uint8)
        square = y[(i * 3) % (height - 80) :][:80, (i * 5) % (width - 80) :][:, :80]
        square[:] = 235
        pictures.append(y)
    return pictures


def _encode(
    codec_name: str,
    options: dict[str, str],
    pictures: list[np.ndarray],
    width: int,
    height: int,
    bitrate: int,
    gop: int,
) -> list[bytes]:
    codec = av.CodecContext.create(codec_name, "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuv420p"
    codec.time_base = fractions.Fraction(1, VIDEO_FPS)
    codec.framerate = fractions.Fraction(VIDEO_FPS, 1)
    codec.bit_rate = bitrate
    codec.gop_size = gop
    codec.options = options
    chroma = np.full((height // 2, width // 2), 128, dtype=np.uint8)
    out: list[bytes] = []
    for i, luma in enumerate(pictures):
        frame = av.VideoFrame(width, height, "yuv420p")
        frame.planes[0].update(np.ascontiguousarray(luma))
        frame.planes[1].update(chroma)
        frame.planes[2].update(chroma)
        frame.pts = i
        if i % gop == 0:
            frame.pict_type = av.video.frame.PictureType.I
        out += [bytes(p) for p in codec.encode(frame)]
    out += [bytes(p) for p in codec.encode(None)]
    return out


# Real-time settings: one frame in, one frame out, as a browser's encoder would.
_VP8_OPTIONS = {
    "deadline": "realtime",
    "cpu-used": "8",
    "lag-in-frames": "0",
    "auto-alt-ref": "0",
}


def _h264_options(gop: int) -> dict[str, str]:
    # Constrained baseline, one slice per frame, SPS/PPS before every IDR: what the
    # Worker's H.264 m-lines (42e01f, packetization-mode 1) carry.
    return {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "profile": "baseline",
        "x264-params": f"repeat-headers=1:keyint={gop}:min-keyint={gop}:scenecut=0",
    }


def vp8_clip(
    width: int = 640,
    height: int = 480,
    seconds: float = 10.0,
    bitrate: int = 600_000,
    keyframe_every_s: float = 5.0,
) -> Clip:
    """Long enough between keyframes that a newcomer waiting for one would notice."""
    count = int(seconds * VIDEO_FPS)
    gop = int(keyframe_every_s * VIDEO_FPS)

    def make() -> Clip:
        pictures = _pictures(width, height, count)
        frames = _encode("libvpx", _VP8_OPTIONS, pictures, width, height, bitrate, gop)
        if len(frames) != count:
            raise RuntimeError("the VP8 encoder dropped frames")
        keys = tuple(range(0, count, gop))
        return Clip("video", tuple(frames), keys, 90000 // VIDEO_FPS, width, height)

    return _cached(f"vp8-v2-{width}x{height}-{count}-{bitrate}-{gop}", make)


def h264_clip(
    width: int = 640,
    height: int = 480,
    seconds: float = 10.0,
    bitrate: int = 600_000,
    keyframe_every_s: float = 5.0,
) -> Clip:
    """The H.264 twin of ``vp8_clip``, for rooms that forward H.264."""
    count = int(seconds * VIDEO_FPS)
    gop = int(keyframe_every_s * VIDEO_FPS)

    def make() -> Clip:
        pictures = _pictures(width, height, count)
        frames = _encode("libx264", _h264_options(gop), pictures, width, height, bitrate, gop)
        if len(frames) != count:
            raise RuntimeError("the H.264 encoder dropped frames")
        keys = tuple(range(0, count, gop))
        return Clip("video", tuple(frames), keys, 90000 // VIDEO_FPS, width, height)

    return _cached(f"h264-v1-{width}x{height}-{count}-{bitrate}-{gop}", make)


def opus_clip(seconds: float = 10.0) -> Clip:
    def make() -> Clip:
        codec = av.CodecContext.create("libopus", "w")
        codec.sample_rate = 48000
        codec.layout = "stereo"
        codec.format = "s16"
        codec.bit_rate = 32000
        codec.time_base = fractions.Fraction(1, 48000)
        samples = 960
        t = np.arange(int(seconds * 48000)) / 48000
        tone = (0.2 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
        out: list[bytes] = []
        for i in range(len(tone) // samples):
            chunk = tone[i * samples : (i + 1) * samples]
            frame = av.AudioFrame.from_ndarray(
                np.repeat(chunk, 2).reshape(1, -1), format="s16", layout="stereo"
            )
            frame.sample_rate = 48000
            frame.pts = i * samples
            out += [bytes(p) for p in codec.encode(frame)]
        return Clip("audio", tuple(out), (), samples)

    return _cached(f"opus-v1-{seconds}", make)


class ClipTrack(MediaStreamTrack):
    """Sends a Clip at its real-time pace, looping, as encoded ``av.Packet``s."""

    def __init__(self, clip: Clip, on_sent: Callable[[bytes, float], None] | None = None) -> None:
        super().__init__()
        self.kind = clip.kind
        self.clip = clip
        self.frames_sent = 0
        self.keyframes_sent = 0
        self.keyframe_requests = 0
        self._on_sent = on_sent
        self._want_keyframe = False
        self._index = 0
        self._start: float | None = None
        self._interval = clip.ticks_per_frame / (90000 if clip.kind == "video" else 48000)

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self._want_keyframe = True

    def successor(self) -> ClipTrack:
        """A live track that goes on where this one is (aiortc stops a sender's track when
        its connection closes; a bot moving to a new connection needs a new one)."""
        track = ClipTrack(self.clip, self._on_sent)
        track.frames_sent, track.keyframes_sent = self.frames_sent, self.keyframes_sent
        track.keyframe_requests = self.keyframe_requests
        track._index, track._start = self._index, self._start
        return track

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        n = self.frames_sent
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + n * self._interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if self._want_keyframe:
            self._want_keyframe = False
            later = [i for i in self.clip.keyframe_indices if i >= self._index]
            self._index = later[0] if later else 0
        index = self._index
        self._index = (index + 1) % len(self.clip.frames)
        data = self.clip.frames[index]
        if index in self.clip.keyframe_indices:
            self.keyframes_sent += 1
        packet = av.Packet(data)
        packet.pts = n * self.clip.ticks_per_frame
        packet.time_base = TIME_BASE[self.kind]
        self.frames_sent += 1
        if self._on_sent is not None:
            self._on_sent(data, time.monotonic())
        return packet
