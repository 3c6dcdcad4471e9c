"""Codec facts the forwarding path needs without decoding: keyframes, frame starts, clocks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from fractions import Fraction

from aiortc import RTCRtpReceiver
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from media.config import VIDEO_CODECS, VideoCodec

CLOCK_RATE = {"audio": 48000, "video": 90000}
TIME_BASE = {kind: Fraction(1, rate) for kind, rate in CLOCK_RATE.items()}

# The one H.264 profile every leg uses: constrained baseline, what browsers all decode.
_H264_PROFILE = "42e01f"


def is_vp8_keyframe(frame: bytes) -> bool:
    # RFC 6386 9.1: bit 0 of the frame tag is 0 for a key frame, and a key frame carries
    # the start code 9d 01 2a at bytes 3..5.
    return len(frame) >= 6 and not frame[0] & 0x01 and frame[3:6] == b"\x9d\x01\x2a"


def is_h264_keyframe(frame: bytes) -> bool:
    """An Annex-B access unit holding an IDR slice (NAL type 5)."""
    i = frame.find(b"\x00\x00\x01")
    while i != -1 and i + 3 < len(frame):
        if frame[i + 3] & 0x1F == 5:
            return True
        i = frame.find(b"\x00\x00\x01", i + 3)
    return False


def is_keyframe(mime_type: str, frame: bytes) -> bool:
    mime = mime_type.lower()
    if mime == "video/vp8":
        return is_vp8_keyframe(frame)
    if mime == "video/h264":
        return is_h264_keyframe(frame)
    # Audio frames are independent of each other.
    return True


def vp8_starts_frame(payload: bytes) -> bool:
    # RFC 7741 4.2: S=1 and PID=0 in the payload descriptor mark a frame's first packet.
    return bool(payload) and payload[0] & 0x17 == 0x10


def h264_starts_frame(payload: bytes) -> bool:
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type == 28:  # FU-A: the start bit of the fragment header
        return len(payload) > 1 and bool(payload[1] & 0x80)
    return True


def frame_start_check(codec: VideoCodec) -> Callable[[bytes], bool]:
    return vp8_starts_frame if codec == "VP8" else h264_starts_frame


def mime_type(kind: str, video_codec: VideoCodec) -> str:
    """The one codec a track of ``kind`` speaks in a room whose video codec is given."""
    return "audio/opus" if kind == "audio" else f"video/{video_codec}"


def video_codecs_named(names: Iterable[str]) -> frozenset[VideoCodec]:
    """The codecs we forward among ``names`` as a client spells them ("vp8", "H264", ...)."""
    known = {codec.lower(): codec for codec in VIDEO_CODECS}
    return frozenset(known[n.lower()] for n in names if n.lower() in known)


def choose_video_codec(
    configured: VideoCodec, supported: frozenset[VideoCodec] | None
) -> VideoCodec:
    """A room's video codec: the configured one if its first participant can use it, else
    one they can (in VIDEO_CODECS order). ``supported`` None means any (an old client)."""
    if supported is None or configured in supported or not supported:
        return configured
    return next(c for c in VIDEO_CODECS if c in supported)


def preferred_codecs(kind: str, video_codec: VideoCodec) -> list[RTCRtpCodecCapability]:
    """The capabilities to offer on every transceiver of ``kind``: one codec (plus RTX).

    Every Producer and Consumer then speaks the same codec, so frames forward unchanged.
    """
    caps = RTCRtpReceiver.getCapabilities(kind)
    assert caps is not None
    chosen: list[RTCRtpCodecCapability] = []
    for cap in caps.codecs:
        mime = cap.mimeType.lower()
        if kind == "audio" and mime == "audio/opus":
            chosen.append(cap)
        elif kind == "video" and mime == f"video/{video_codec.lower()}":
            if video_codec == "H264" and cap.parameters.get("profile-level-id") != _H264_PROFILE:
                continue
            chosen.append(cap)
    if kind == "video":
        chosen += [c for c in caps.codecs if c.mimeType.lower() == "video/rtx"]
    if not chosen:
        raise ValueError(f"aiortc offers no {video_codec if kind == 'video' else 'Opus'} codec")
    return chosen
