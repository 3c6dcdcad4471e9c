"""Remux one track's encoded frames into WebM / Matroska, straight into an EncryptedWriter.

No decoder or encoder is ever opened: the output stream is created with
``add_mux_stream`` (a stream with codec parameters and no codec context), so muxing a frame
costs a copy and some EBML framing. The frame bytes land in the file unchanged; only H.264
in Matroska has its Annex-B start codes rewritten as length prefixes (the container's
rule, done by FFmpeg's muxer — the NAL units themselves are untouched).

The muxer writes a cluster at most every second or 32 KiB (non-seekable output), and the
writer seals a chunk at least every ``checkpoint_s`` of media time, so a crash loses at
most about two seconds of a track.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av

from recordings.crypto import EncryptedWriter

log = logging.getLogger(__name__)

# codec -> (container format, file extension, PyAV codec name)
CONTAINERS: dict[str, tuple[str, str, str]] = {
    "vp8": ("webm", "webm", "vp8"),
    "opus": ("webm", "webm", "opus"),
    "h264": ("matroska", "mkv", "h264"),
}
# Matroska's timestamps are milliseconds; stating it keeps PyAV from guessing.
_MKV_TIME_BASE = Fraction(1, 1000)
# A keyframe claiming a picture larger than 8K on a side (or 0 wide) comes from a broken or
# hostile sender: the muxer would refuse it, so such a frame cannot start a file.
MAX_DIMENSION = 8192


def normalize_codec(codec: str) -> str:
    """'video/VP8', 'VP8', 'audio/opus' ... -> 'vp8' | 'h264' | 'opus'."""
    name = codec.lower().rsplit("/", 1)[-1]
    if name not in CONTAINERS:
        raise ValueError(f"cannot record codec {codec!r} (only VP8, H.264 and Opus)")
    return name


def vp8_dimensions(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 key frame header (RFC 6386 9.1), None for delta frames."""
    if len(frame) < 10 or frame[0] & 0x01 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    # The top two bits of each are the upscaling hint, not part of the size.
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return width, height


class _Bits:
    """Exp-Golomb reader over an RBSP (emulation prevention bytes already removed)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]  # IndexError on a short SPS: caught by caller
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _nal_units(frame: bytes) -> list[bytes]:
    units = []
    for part in frame.split(b"\x00\x00\x01"):
        part = part.rstrip(b"\x00")  # the extra zero of a 4-byte start code
        if part:
            units.append(part)
    return units


@dataclass(frozen=True)
class H264Sps:
    width: int
    height: int
    profile_idc: int
    level_idc: int


def parse_h264_sps(nal: bytes) -> H264Sps:
    """The picture size of an H.264 SPS NAL unit (ITU-T H.264 7.3.2.1.1), cropping applied."""
    rbsp = nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")
    b = _Bits(rbsp)
    profile_idc = b.u(8)
    b.u(8)  # constraint flags
    level_idc = b.u(8)
    b.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_planes = 0
    if profile_idc in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format_idc = b.ue()
        if chroma_format_idc == 3:
            separate_planes = b.u(1)
        b.ue()  # bit_depth_luma_minus8
        b.ue()  # bit_depth_chroma_minus8
        b.u(1)  # qpprime_y_zero_transform_bypass_flag
        if b.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if b.u(1):
                    last, nxt = 8, 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + b.se() + 256) % 256
                        last = nxt or last
    b.ue()  # log2_max_frame_num_minus4
    poc_type = b.ue()
    if poc_type == 0:
        b.ue()
    elif poc_type == 1:
        b.u(1)
        b.se()
        b.se()
        for _ in range(b.ue()):
            b.se()
    b.ue()  # max_num_ref_frames
    b.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = b.ue() + 1
    height_map_units = b.ue() + 1
    frame_mbs_only = b.u(1)
    if not frame_mbs_only:
        b.u(1)  # mb_adaptive_frame_field_flag
    b.u(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_map_units * 16
    if b.u(1):  # frame_cropping_flag
        left, right, top, bottom = b.ue(), b.ue(), b.ue(), b.ue()
        chroma_array_type = 0 if separate_planes else chroma_format_idc
        if chroma_array_type == 0:
            unit_x, unit_y = 1, 2 - frame_mbs_only
        else:
            sub_w = 1 if chroma_format_idc == 3 else 2
            sub_h = 2 if chroma_format_idc == 1 else 1
            unit_x, unit_y = sub_w, sub_h * (2 - frame_mbs_only)
        width -= unit_x * (left + right)
        height -= unit_y * (top + bottom)
    return H264Sps(width, height, profile_idc, level_idc)


def h264_sps(frame: bytes) -> H264Sps | None:
    """The first SPS in an Annex-B access unit, if it carries one that parses."""
    for nal in _nal_units(frame):
        if nal[0] & 0x1F == 7:
            try:
                return parse_h264_sps(nal)
            except (IndexError, ValueError):
                return None
    return None


@dataclass
class TrackStats:
    frames: int = 0
    keyframes: int = 0
    bytes: int = 0
    dropped: int = 0  # frames refused: before the first keyframe, or timestamps going back
    first_pts: int | None = None  # in the caller's time base
    last_pts: int | None = None
    time_base: Fraction | None = None
    params: dict[str, Any] = field(default_factory=dict)


class TrackWriter:
    """One track -> one container, muxed into ``out`` (which it closes).

    A video track is only opened by its first keyframe (its size comes from that frame's
    header, and a file starting with a delta frame would not decode); frames before it, and
    keyframes whose header gives no usable size (0x0, over ``MAX_DIMENSION``), are dropped
    and counted. Returns of ``write``: True if the frame was written.
    """

    def __init__(
        self,
        out: EncryptedWriter,
        kind: str,
        codec: str,
        *,
        sample_rate: int = 48000,
        channels: int = 2,
        checkpoint_s: float = 1.0,
    ) -> None:
        if kind not in ("audio", "video"):
            raise ValueError(f"kind must be audio or video, not {kind!r}")
        self.kind = kind
        self.codec = normalize_codec(codec)
        if (kind == "audio") != (self.codec == "opus"):
            raise ValueError(f"{codec} is not a {kind} codec")
        self.format, self.extension, self._av_codec = CONTAINERS[self.codec]
        self.out = out
        self.stats = TrackStats()
        self._sample_rate = sample_rate
        self._channels = channels
        self._checkpoint_s = checkpoint_s
        self._last_checkpoint: float | None = None
        self._container: Any = None
        self._stream: Any = None
        self.closed = False

    def _open(self, frame: bytes) -> bool:
        params: dict[str, Any] = {"codec": self.codec, "container": self.format}
        if self.kind == "video":
            if self.codec == "vp8":
                size = vp8_dimensions(frame)
            else:
                sps = h264_sps(frame)
                size = (sps.width, sps.height) if sps else None
                if sps:
                    params["profile_idc"] = sps.profile_idc
                    params["level_idc"] = sps.level_idc
            if size is None or not all(0 < side <= MAX_DIMENSION for side in size):
                return False
            params["width"], params["height"] = size
        else:
            params["sample_rate"] = self._sample_rate
            params["channels"] = self._channels
        container = av.open(
            self.out,
            "w",
            format=self.format,
            # Clusters of at most 1 s: what the muxer holds back bounds what a crash loses.
            options={"cluster_time_limit": "1000"},
        )
        if self.kind == "video":
            stream = container.add_mux_stream(
                self._av_codec, width=params["width"], height=params["height"]
            )
        else:
            stream = container.add_mux_stream(self._av_codec, rate=self._sample_rate)
            # No OpusHead is written (that needs an encoder); the layout gives the Channels
            # element, which is what FFmpeg's Opus decoder falls back on.
            stream.layout = "stereo" if self._channels == 2 else "mono"
        stream.time_base = _MKV_TIME_BASE
        self._container, self._stream = container, stream
        self.stats.params = params
        return True

    def write(self, data: bytes, pts: int, time_base: Fraction, keyframe: bool) -> bool:
        """Mux one encoded frame.

        Raises OSError if the disk write fails (disk full; ``out.failed`` then holds it), and
        the muxer's own error (e.g. ``av.FFmpegError``) for a frame it cannot take.
        """
        if self.closed:
            return False
        st = self.stats
        if self._container is None:
            if self.kind == "video" and not keyframe:
                st.dropped += 1
                return False
            if not self._open(data):
                st.dropped += 1
                return False
            st.time_base = time_base
        if time_base != st.time_base:
            # One time base per track: convert, so a caller switching units cannot reorder.
            pts = round(Fraction(pts) * time_base / st.time_base)
            time_base = st.time_base
        if st.last_pts is not None and pts <= st.last_pts:
            # Matroska needs increasing timestamps; a repeat or a step back (a reconnect,
            # a retransmission) is dropped rather than written out of order.
            st.dropped += 1
            return False
        packet = av.Packet(data)
        packet.pts = packet.dts = pts
        packet.time_base = time_base
        packet.stream = self._stream
        packet.is_keyframe = keyframe
        self._container.mux(packet)
        if st.first_pts is None:
            st.first_pts = pts
        st.last_pts = pts
        st.frames += 1
        st.bytes += len(data)
        if keyframe and self.kind == "video":
            st.keyframes += 1
        now = float(pts * time_base)
        if self._last_checkpoint is None:
            self._last_checkpoint = now
        elif now - self._last_checkpoint >= self._checkpoint_s:
            self.out.checkpoint()
            self._last_checkpoint = now
        return True

    @property
    def started(self) -> bool:
        return self._container is not None

    def close(self) -> None:
        """Write the container trailer and the final chunk. A failure leaves it truncated."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._container is not None:
                self._container.close()
        except Exception:
            self.out.abort()
            raise
        else:
            self.out.close()

    def abort(self) -> None:
        """Stop without a trailer or final chunk (after a failed write): reads as truncated."""
        if self.closed:
            return
        self.closed = True
        self.out.abort()
        if self._container is not None:
            # Its output is closed now, so PyAV frees it without writing a trailer.
            try:
                self._container.close()
            except Exception:
                log.debug("closing an aborted container failed", exc_info=True)
