"""The pieces of the forwarding path that need no network: codecs, frame release, ICE."""

from __future__ import annotations

import pytest
from aiortc.rtp import RtpPacket

from media.clips import vp8_clip
from media.codecs import (
    choose_video_codec,
    h264_starts_frame,
    is_h264_keyframe,
    is_vp8_keyframe,
    video_codecs_named,
    vp8_starts_frame,
)
from media.config import IceAddress, VideoCodec
from media.errors import loggable
from media.ice import announce
from media.jitter import AudioPassThrough, VideoFrameAssembler


def _packet(seq: int, ts: int, payload: bytes, marker: bool) -> RtpPacket:
    packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts)
    packet.marker = int(marker)
    packet.payload = payload
    packet._data = payload[1:]  # type: ignore[attr-defined]
    return packet


def test_vp8_keyframes_are_recognised() -> None:
    clip = vp8_clip()
    keys = [i for i, f in enumerate(clip.frames) if is_vp8_keyframe(f)]
    assert keys == list(clip.keyframe_indices) and keys[0] == 0 and len(keys) >= 2


def test_h264_idr_detection() -> None:
    sps, idr, slice_ = b"\x00\x00\x00\x01\x67abc", b"\x00\x00\x01\x65xyz", b"\x00\x00\x01\x41xyz"
    assert is_h264_keyframe(sps + idr)
    assert not is_h264_keyframe(sps + slice_)
    assert h264_starts_frame(b"\x7c\x85rest")  # FU-A, start bit set
    assert not h264_starts_frame(b"\x7c\x05rest")  # FU-A continuation


def test_video_frame_released_on_its_marker_packet() -> None:
    buffer = VideoFrameAssembler(vp8_starts_frame)
    start = b"\x10"  # S=1, PID=0
    middle = b"\x00"
    assert buffer.add(_packet(100, 3000, start + b"ab", False)) == (False, None)
    _, frame = buffer.add(_packet(101, 3000, middle + b"cd", True))
    # Released by the marker: aiortc's own buffer would wait for packet 102.
    assert frame is not None and frame.data == b"abcd" and frame.timestamp == 3000
    assert not buffer.discontinuity


def test_a_frame_missing_its_head_is_dropped_and_flagged() -> None:
    buffer = VideoFrameAssembler(vp8_starts_frame)
    # The stream is joined mid-frame: the first packet continues a frame.
    _, frame = buffer.add(_packet(7, 90, b"\x00tail", True))
    assert frame is None and buffer.discontinuity
    buffer.discontinuity = False
    _, frame = buffer.add(_packet(8, 180, b"\x10whole", True))
    assert frame is not None and frame.data == b"whole"


def test_audio_passes_through_and_drops_late_packets() -> None:
    buffer = AudioPassThrough()
    assert buffer.add(_packet(10, 960, b"\x00a", False))[1] is not None
    assert buffer.add(_packet(12, 2880, b"\x00c", False))[1] is not None
    assert buffer.add(_packet(11, 1920, b"\x00b", False))[1] is None  # late: dropped


def test_announced_address_rewrites_host_candidates_only() -> None:
    sdp = "\r\n".join(
        [
            "c=IN IP4 10.0.0.5",
            "a=candidate:1 1 udp 2130706431 10.0.0.5 5000 typ host",
            "a=candidate:2 1 udp 2130706431 10.0.0.6 5001 typ host",
            "a=candidate:3 1 udp 1694498815 198.51.100.1 6000 typ srflx raddr 10.0.0.5 rport 5000",
        ]
    )
    out = announce(sdp, (IceAddress.parse("10.0.0.5=203.0.113.7"), IceAddress("10.0.0.6")))
    lines = out.split("\r\n")
    assert lines[0] == "c=IN IP4 203.0.113.7"
    assert "203.0.113.7 5000 typ host" in lines[1]
    assert "10.0.0.6 5001 typ host" in lines[2]
    assert lines[3] == sdp.split("\r\n")[3]


def test_fast_ntp_clock_matches_aiortcs() -> None:
    import aiortc.clock

    from media.tap import _fast_ntp_time

    reference = aiortc.clock.datetime_to_ntp(aiortc.clock.current_datetime())
    # Within a millisecond (NTP fraction units are 2**-32 s).
    assert abs(_fast_ntp_time() - reference) < (1 << 32) // 1000


def test_loggable_masks_addresses_and_escapes_control_characters() -> None:
    text = "bad port 192.0.2.77 from fd00::2\x1b[2J\nFORGED LINE"
    line = loggable(text)
    assert "192.0.2.77" not in line and "fd00::2" not in line
    assert line.isprintable() and "\\x1b" in line and "\\n" in line
    assert len(loggable("x" * 1000)) == 200


def test_video_codecs_are_read_as_clients_spell_them() -> None:
    assert video_codecs_named(["vp8", "H264", "VP9", "AV1"]) == {"VP8", "H264"}
    assert video_codecs_named([]) == frozenset()


@pytest.mark.parametrize(
    ("configured", "supported", "chosen"),
    [
        ("H264", None, "H264"),  # an old client says nothing: the configured codec
        ("H264", frozenset({"VP8", "H264"}), "H264"),
        ("H264", frozenset({"VP8"}), "VP8"),  # Firefox without OpenH264
        ("VP8", frozenset({"H264"}), "H264"),
        ("VP8", frozenset(), "VP8"),  # can do none: the configured one, it gets audio
    ],
)
def test_a_room_picks_the_configured_codec_if_its_first_participant_can(
    configured: VideoCodec, supported: frozenset[VideoCodec] | None, chosen: VideoCodec
) -> None:
    assert choose_video_codec(configured, supported) == chosen
