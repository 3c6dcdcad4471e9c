"""After the call: one MP4 (H.264 + AAC) with every video in a labelled grid and the audio mixed.

Runs in its own process (the CLI / API start it), never on the Worker: it is the one place
in teleconsult that decodes and encodes. Inputs are decrypted chunk by chunk as PyAV reads
them (``open_decrypted``); the output goes straight into an EncryptedWriter as fragmented
MP4 (fragments need no seeking back, so nothing is ever rewritten or kept in plaintext).

Timeline: every track's timestamps are on the Worker's clock (see media/producer.py), so a
frame's place in the grid video is simply its time minus the earliest start. Each output
frame shows, per tile, the latest picture at or before that instant; audio frames are
summed into one stereo mix at their sample position.

Speed: the work stays in YUV 4:2:0 end to end (swscale scales each decoded picture into its
tile once; tiles are copied into one preallocated canvas; labels are drawn on the luma
plane), so the cost is the decoders plus x264. Measured numbers are in docs/recordings.md.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from recordings.crypto import EncryptedWriter, open_decrypted
from recordings.manifest import ComposedEntry, Manifest, TrackEntry
from recordings.store import COMPOSED_NAME, RecordingStore

log = logging.getLogger(__name__)

Progress = Callable[[float], None]

SAMPLE_RATE = 48000
_AAC_FRAME = 1024
# Luma levels (limited range): a tile with no picture is dark grey, labels white on black.
_Y_EMPTY, _Y_BLACK, _Y_WHITE = 40, 16, 235
# Snap an audio frame to the end of the previous one when it starts this close to it:
# Matroska's millisecond timestamps would otherwise leave sub-millisecond clicks.
_AUDIO_SNAP = SAMPLE_RATE // 500


@dataclass
class ComposeOptions:
    width: int = 1280
    height: int = 720
    fps: int = 30
    preset: str = "ultrafast"  # x264: the speed/size trade-off of the archive copy
    crf: int = 23
    x264_options: dict[str, str] = field(default_factory=dict)  # e.g. {"threads": "1"}
    audio_bit_rate: int = 96_000
    # Compose what a crashed recording left (its files lack a final chunk).
    allow_truncated: bool = True


@dataclass
class _Tile:
    label: str
    segments: list[TrackEntry]
    x: int = 0
    y: int = 0
    w: int = 0
    h: int = 0


def _grid(n: int) -> tuple[int, int]:
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    return cols, rows


def _even(v: float) -> int:
    return int(v) & ~1


def _label(role: str, participant: str, same_role: int) -> str:
    # The role is what the record needs (who said what); the short opaque id only tells
    # two experts apart. Never a name: the manifest has none.
    return f"{role} {participant[-4:]}" if same_role > 1 else role


class _VideoSource:
    """Decoded pictures of one tile's segments in time order, scaled into the tile.

    Decoding and scaling run in a thread of their own, a few pictures ahead: libvpx,
    libavcodec and cv2.resize release the GIL, so on a multi-core machine they overlap
    with x264 encoding the previous grid frame.
    """

    _AHEAD = 8

    def __init__(self, tile: _Tile, paths: list[Path], key: bytes, allow_truncated: bool) -> None:
        self.tile = tile
        self.current: np.ndarray | None = None  # packed yuv420p, tile-sized
        self.errors = 0
        self._queue: queue.Queue[tuple[float, np.ndarray] | BaseException | None] = queue.Queue(
            self._AHEAD
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(paths, key, allow_truncated), daemon=True
        )
        self._next: tuple[float, np.ndarray] | None = None
        self._done = False
        self._thread.start()
        self._advance()

    def _run(self, paths: list[Path], key: bytes, allow_truncated: bool) -> None:
        try:
            for t, frame in self._frames(paths, key, allow_truncated):
                item = (t, self._fit(frame))
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(None)
        except BaseException as e:
            self._queue.put(e)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _frames(
        self, paths: list[Path], key: bytes, allow_truncated: bool
    ) -> Iterator[tuple[float, av.VideoFrame]]:
        for path in paths:
            with av.open(open_decrypted(path, key, allow_truncated=allow_truncated)) as c:
                stream = c.streams.video[0]
                try:
                    for packet in c.demux(stream):
                        try:
                            frames = packet.decode()
                        except av.error.FFmpegError:
                            # A damaged or undecodable frame: hold the last picture and go
                            # on; the decoder resynchronises at the next keyframe.
                            self.errors += 1
                            continue
                        for frame in frames:
                            if frame.time is not None:
                                yield float(frame.time), frame
                except av.error.FFmpegError:
                    # The end of a truncated file can cut a frame in half.
                    self.errors += 1

    def _advance(self) -> None:
        item = self._queue.get()
        if item is None:
            self._next, self._done = None, True
        elif isinstance(item, BaseException):
            self._next, self._done = None, True
            raise item
        else:
            self._next = item

    def _fit(self, frame: av.VideoFrame) -> np.ndarray:
        """Scale into the tile keeping the aspect ratio (letterbox), as packed yuv420p."""
        tw, th = self.tile.w, self.tile.h
        fw, fh = frame.width & ~1, frame.height & ~1
        scale = min(tw / fw, th / fh)
        w, h = max(2, _even(fw * scale)), max(2, _even(fh * scale))
        if (fw, fh) != (frame.width, frame.height) or frame.format.name != "yuv420p":
            frame = frame.reformat(width=fw, height=fh, format="yuv420p")
        sy, su, sv = _planes(frame.to_ndarray(), fw, fh)
        out = _blank_tile(tw, th, _Y_BLACK)
        dy, du, dv = _planes(out, tw, th)
        x, y = _even((tw - w) / 2), _even((th - h) / 2)
        # cv2.resize on each plane: about 3x cheaper than swscale for this job.
        lin = cv2.INTER_LINEAR
        dy[y : y + h, x : x + w] = cv2.resize(sy, (w, h), interpolation=lin)
        cx, cy, cw, ch = x // 2, y // 2, w // 2, h // 2
        du[cy : cy + ch, cx : cx + cw] = cv2.resize(su, (cw, ch), interpolation=lin)
        dv[cy : cy + ch, cx : cx + cw] = cv2.resize(sv, (cw, ch), interpolation=lin)
        return _draw_label(out, self.tile)

    def at(self, t: float) -> np.ndarray | None:
        while self._next is not None and self._next[0] <= t:
            self.current = self._next[1]
            self._advance()
        return self.current


def _blank_tile(w: int, h: int, luma: int) -> np.ndarray:
    out = np.empty((h * 3 // 2, w), np.uint8)
    out[:h] = luma
    out[h:] = 128
    return out


def _planes(buf: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y, U, V planes of a packed yuv420p array of a w x h picture."""
    flat = buf.reshape(-1)
    ysz, csz = w * h, (w // 2) * (h // 2)
    return (
        flat[:ysz].reshape(h, w),
        flat[ysz : ysz + csz].reshape(h // 2, w // 2),
        flat[ysz + csz : ysz + 2 * csz].reshape(h // 2, w // 2),
    )


def _paste(dst: np.ndarray, dw: int, dh: int, src: np.ndarray, sw: int, sh: int, x: int, y: int):
    dy, du, dv = _planes(dst, dw, dh)
    sy, su, sv = _planes(src, sw, sh)
    dy[y : y + sh, x : x + sw] = sy
    du[y // 2 : (y + sh) // 2, x // 2 : (x + sw) // 2] = su
    dv[y // 2 : (y + sh) // 2, x // 2 : (x + sw) // 2] = sv


def _draw_label(pic: np.ndarray, tile: _Tile) -> np.ndarray:
    """Write the tile's label, white on a black box, into a tile-sized yuv420p picture."""
    y_plane, u_plane, v_plane = _planes(pic, tile.w, tile.h)
    scale = max(0.5, tile.h / 480)
    (tw, th), base = cv2.getTextSize(tile.label, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    pad = 6
    x0, y0 = 8, 8
    x1 = min(tile.w, x0 + tw + 2 * pad) & ~1
    y1 = min(tile.h, y0 + th + base + 2 * pad) & ~1
    y_plane[y0:y1, x0:x1] = _Y_BLACK
    u_plane[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = 128
    v_plane[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = 128
    # On the luma plane only: a grey-scale label needs no colour conversion.
    cv2.putText(
        y_plane,
        tile.label,
        (x0 + pad, y0 + pad + th),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        _Y_WHITE,
        2,
        cv2.LINE_AA,
    )
    return pic


class _AudioSource:
    """Decoded audio of one track as (first sample index on the timeline, float32 (2, n))."""

    def __init__(self, path: Path, key: bytes, t0: float, allow_truncated: bool) -> None:
        self._iter = self._blocks(path, key, t0, allow_truncated)
        self.next: tuple[int, np.ndarray] | None = None
        self.advance()

    def _blocks(
        self, path: Path, key: bytes, t0: float, allow_truncated: bool
    ) -> Iterator[tuple[int, np.ndarray]]:
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=SAMPLE_RATE)
        expected: int | None = None
        with av.open(open_decrypted(path, key, allow_truncated=allow_truncated)) as c:
            for packet in c.demux(c.streams.audio[0]):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    continue
                for frame in frames:
                    if frame.time is None:
                        continue
                    start = round((float(frame.time) - t0) * SAMPLE_RATE)
                    if expected is not None and abs(start - expected) <= _AUDIO_SNAP:
                        start = expected
                    for out in resampler.resample(frame):
                        samples = out.to_ndarray().astype(np.float32, copy=False)
                        yield start, samples
                        start += samples.shape[1]
                    expected = start

    def advance(self) -> None:
        try:
            self.next = next(self._iter)
        except (StopIteration, av.error.FFmpegError):
            self.next = None


class _Mixer:
    """Sums the sources into consecutive blocks of the timeline."""

    def __init__(self, sources: list[_AudioSource]) -> None:
        self.sources = sources
        self.pos = 0  # first sample not yet emitted
        self.buf = np.zeros((2, 0), np.float32)  # samples from self.pos on

    def take(self, end: int) -> np.ndarray:
        need = end - self.pos
        if need <= 0:
            return np.zeros((2, 0), np.float32)
        if self.buf.shape[1] < need:
            self.buf = np.concatenate(
                [self.buf, np.zeros((2, need - self.buf.shape[1]), np.float32)], axis=1
            )
        for src in self.sources:
            while src.next is not None and src.next[0] < end:
                start, samples = src.next
                off = start - self.pos
                if off < 0:  # overlaps what was already emitted: keep only the rest
                    samples, off = samples[:, -off:], 0
                stop = off + samples.shape[1]
                if stop > self.buf.shape[1]:
                    self.buf = np.concatenate(
                        [self.buf, np.zeros((2, stop - self.buf.shape[1]), np.float32)], axis=1
                    )
                self.buf[:, off:stop] += samples
                src.advance()
        out, self.buf = self.buf[:, :need], self.buf[:, need:]
        self.pos = end
        return np.clip(out, -1.0, 1.0)


def compose(
    store: RecordingStore,
    consultation: str,
    recording: str,
    *,
    progress: Progress | None = None,
    options: ComposeOptions | None = None,
) -> ComposedEntry:
    """Compose the recording's grid video into ``composed.mp4.enc``; record it in the manifest."""
    opts = options or ComposeOptions()
    key = store.keystore.data_key(consultation)
    rec_dir = store.recording_dir(consultation, recording)
    manifest_path = store.manifest_path(consultation, recording)
    manifest = Manifest.load(manifest_path, key)
    tracks = [t for t in manifest.tracks if t.file and t.start_s is not None]
    if not tracks:
        raise ValueError(f"recording {recording} has no recorded frames to compose")
    t0 = min(t.start_s for t in tracks if t.start_s is not None)
    t1 = max((t.end_s or t.start_s or t0) for t in tracks)
    duration = t1 - t0 + 1 / opts.fps
    total_frames = max(1, round(duration * opts.fps))

    tiles = _layout(manifest, [t for t in tracks if t.kind == "video"], opts)
    video_sources = [
        _VideoSource(
            tile, [rec_dir / str(s.file) for s in tile.segments], key, opts.allow_truncated
        )
        for tile in tiles
    ]
    mixer = _Mixer(
        [
            _AudioSource(rec_dir / str(t.file), key, t0, opts.allow_truncated)
            for t in tracks
            if t.kind == "audio"
        ]
    )

    tmp = rec_dir / f".{COMPOSED_NAME}.{secrets.token_hex(4)}.partial"
    out = EncryptedWriter.create(tmp, key)
    started = time.monotonic()
    try:
        with av.open(
            out,
            "w",
            format="mp4",
            # Fragmented MP4: written front to back, never seeking back to patch the moov.
            options={"movflags": "frag_keyframe+empty_moov+default_base_moof"},
        ) as container:
            vstream = container.add_stream("libx264", rate=opts.fps)
            vstream.width, vstream.height, vstream.pix_fmt = opts.width, opts.height, "yuv420p"
            vstream.codec_context.options = {
                "preset": opts.preset,
                "crf": str(opts.crf),
                # One keyframe (and MP4 fragment) every two seconds: seekable playback.
                "g": str(2 * opts.fps),
                **opts.x264_options,
            }
            astream = container.add_stream("aac", rate=SAMPLE_RATE)
            astream.layout = "stereo"
            astream.bit_rate = opts.audio_bit_rate
            fifo = av.AudioFifo()
            canvas = _blank_tile(opts.width, opts.height, 0)
            _paint_background(canvas, opts, tiles)
            empty = [_draw_label(_blank_tile(t.w, t.h, _Y_EMPTY), t) for t in tiles]
            shown: list[np.ndarray | None] = [None] * len(tiles)
            last_report = -1.0
            for n in range(total_frames):
                t = t0 + n / opts.fps
                for i, (src, tile) in enumerate(zip(video_sources, tiles, strict=True)):
                    pic = src.at(t)
                    if pic is None:
                        pic = empty[i]
                    # Paste only what changed: the canvas keeps the rest from the last frame.
                    if shown[i] is not pic:
                        _paste(canvas, opts.width, opts.height, pic, tile.w, tile.h, tile.x, tile.y)
                        shown[i] = pic
                frame = av.VideoFrame.from_ndarray(canvas, format="yuv420p")
                frame.pts = n
                frame.time_base = Fraction(1, opts.fps)
                container.mux(vstream.encode(frame))

                mixed = mixer.take(round((n + 1) * SAMPLE_RATE / opts.fps))
                if mixed.shape[1]:
                    aframe = av.AudioFrame.from_ndarray(
                        np.ascontiguousarray(mixed), format="fltp", layout="stereo"
                    )
                    aframe.sample_rate = SAMPLE_RATE
                    aframe.pts = mixer.pos - mixed.shape[1]
                    aframe.time_base = Fraction(1, SAMPLE_RATE)
                    fifo.write(aframe)
                    for chunk in fifo.read_many(_AAC_FRAME):
                        container.mux(astream.encode(chunk))
                done = (n + 1) / total_frames
                if progress is not None and (done - last_report >= 0.01 or n + 1 == total_frames):
                    last_report = done
                    progress(done)
            rest = fifo.read()
            if rest is not None:
                container.mux(astream.encode(rest))
            container.mux(astream.encode(None))
            container.mux(vstream.encode(None))
        out.close()
        os.replace(tmp, rec_dir / COMPOSED_NAME)
    except BaseException:
        out.abort()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        for src in video_sources:
            src.close()
    elapsed = time.monotonic() - started
    log.info(
        "composed %s: %.1f s of media in %.1f s (%.1fx real time)",
        recording,
        duration,
        elapsed,
        duration / elapsed if elapsed else float("inf"),
    )
    entry = ComposedEntry(
        file=COMPOSED_NAME,
        sha256=out.sha256,
        size=out.ciphertext_bytes,
        duration_s=total_frames / opts.fps,
        width=opts.width,
        height=opts.height,
        created_at=time.time(),
        tiles=[
            {"label": t.label, "x": t.x, "y": t.y, "w": t.w, "h": t.h, "tracks": _ids(t)}
            for t in tiles
        ],
    )
    manifest.composed = entry
    manifest.save(manifest_path, key)
    return entry


def _ids(tile: _Tile) -> list[str]:
    return [s.id for s in tile.segments]


def _layout(manifest: Manifest, video: list[TrackEntry], opts: ComposeOptions) -> list[_Tile]:
    """One tile per video Producer (its segments play one after another), in a grid."""
    by_producer: dict[str, list[TrackEntry]] = {}
    for t in sorted(video, key=lambda t: (t.start_s or 0.0, t.id)):
        by_producer.setdefault(t.producer, []).append(t)
    roles = [segs[0].role for segs in by_producer.values()]
    tiles = [
        _Tile(_label(segs[0].role, segs[0].participant, roles.count(segs[0].role)), segs)
        for segs in by_producer.values()
    ]
    if not tiles:
        return []
    cols, rows = _grid(len(tiles))
    tw, th = _even(opts.width / cols), _even(opts.height / rows)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        # A last, short row is centred.
        in_row = min(cols, len(tiles) - r * cols)
        x_off = _even((opts.width - in_row * tw) / 2)
        tile.x, tile.y, tile.w, tile.h = x_off + c * tw, r * th, tw, th
    return tiles


def _paint_background(canvas: np.ndarray, opts: ComposeOptions, tiles: list[_Tile]) -> None:
    y, u, v = _planes(canvas, opts.width, opts.height)
    y[:] = _Y_BLACK
    u[:] = 128
    v[:] = 128
