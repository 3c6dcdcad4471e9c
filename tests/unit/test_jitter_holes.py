"""A lost packet that is never retransmitted costs a bounded stretch of video, not seconds."""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from media.codecs import frame_start_check
from media.jitter import VideoFrameAssembler


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _packets(frame: int, seq: int) -> list[RtpPacket]:
    """Two VP8 packets of one frame (S bit on the first), 30 fps."""
    out = []
    for part in range(2):
        payload = bytes([0x10 if part == 0 else 0x00]) + bytes(100)
        packet = RtpPacket(
            payload_type=96,
            sequence_number=(seq + part) % 65536,
            timestamp=frame * 3000,
            marker=part == 1,
            payload=payload,
        )
        packet._data = payload[1:]  # type: ignore[attr-defined]
        out.append(packet)
    return out


def test_an_unrepaired_loss_stalls_video_at_most_the_hole_timeout() -> None:
    clock = Clock()
    buffer = VideoFrameAssembler(frame_start_check("VP8"), clock=clock)
    released: list[tuple[int, int]] = []  # (frame released, frame being sent then)
    plis = 0
    lost_seq = 100 * 2  # the first packet of frame 100 never arrives
    for frame in range(300):
        clock.now = frame / 30
        for packet in _packets(frame, frame * 2):
            if packet.sequence_number == lost_seq:
                continue
            pli, out = buffer.add(packet)
            plis += pli
            if out is not None:
                released.append((out.timestamp // 3000, frame))
    lags = [sent - got for got, sent in released]
    assert max(lags) == 0  # nothing released late: what waited behind the hole was dropped
    assert buffer.holes_dropped == 1 and plis >= 1 and buffer.discontinuity
    # Frames come again within the timeout (plus a frame), and keep coming to the end.
    resumed = min(got for got, _ in released if got > 100)
    assert resumed - 100 <= round(0.5 * 30) + 2
    assert released[-1][0] == 299


def test_a_repaired_loss_releases_everything_in_order() -> None:
    clock = Clock()
    buffer = VideoFrameAssembler(frame_start_check("VP8"), clock=clock)
    held = None
    got = []
    for frame in range(20):
        clock.now = frame / 30
        for packet in _packets(frame, frame * 2):
            if frame == 5 and held is None and packet.marker:
                held = packet  # lost, retransmitted two frames later (well within the timeout)
                continue
            _, out = buffer.add(packet)
            if out is not None:
                got.append(out.timestamp // 3000)
        if frame == 7 and held is not None:
            _, out = buffer.add(held)
            if out is not None:
                got.append(out.timestamp // 3000)
    assert buffer.holes_dropped == 0
    assert got == sorted(got) and 5 in got
