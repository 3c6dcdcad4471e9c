"""Frame assembly for forwarding: hand a frame on as soon as it is complete.

aiortc's JitterBuffer ignores the RTP marker bit, so a video frame leaves only when the
next frame's first packet arrives (one frame interval late, ~33 ms at 30 fps) and audio
waits for four packets (~80 ms). A forwarder needs neither delay: the subscriber's own
jitter buffer smooths playout. These subclasses keep aiortc's storage, loss handling and
PLI signalling and change only when a frame is released.

``discontinuity`` is raised whenever a frame was lost or dropped: aiortc's packetizer gives
every forwarded frame the next picture id, so a subscriber cannot see the gap itself and
its Consumer must wait for the next keyframe.

A lost packet is normally repaired by NACK within a round trip. When it is not (aiortc
asks once per gap, and the retransmission can be lost too), aiortc's buffer would hold every
later frame until 512 packets piled up behind the hole (~8 s of 600 kbps video) and then
drain the backlog one frame per packet. The video assembler gives a hole ``hole_timeout_s``
to be repaired, then drops what it holds and reports the loss (``discontinuity`` and a PLI):
a loss costs half a second of video, not eight seconds of delay for every subscriber.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add, uint16_gt

from media.vp8 import FrameLayer

# How long frames may wait behind a lost packet for its retransmission: a few round trips.
HOLE_TIMEOUT_S = 0.5


class LayeredFrame(JitterFrame):
    """A reassembled frame and its temporal layer as the publisher tagged it (None: the
    publisher sends no layers), read off its first packet before the descriptor is gone."""

    def __init__(self, data: bytes, timestamp: int, layer: FrameLayer | None) -> None:
        super().__init__(data, timestamp)
        self.layer = layer


class VideoFrameAssembler(JitterBuffer):
    def __init__(
        self,
        starts_frame: Callable[[bytes], bool],
        capacity: int = 512,
        *,
        hole_timeout_s: float = HOLE_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        layer_of: Callable[[bytes], FrameLayer | None] | None = None,
    ) -> None:
        super().__init__(capacity=capacity, is_video=True)
        self._starts_frame = starts_frame
        self._layer_of = layer_of
        self.discontinuity = False
        self._hole_timeout = hole_timeout_s
        self._clock = clock
        self._last_release: float | None = None
        self.holes_dropped = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli_flag, frame = super().add(packet)
        if pli_flag:
            # aiortc dropped packets (reordering beyond repair, or overflow).
            self.discontinuity = True
        now = self._clock()
        if self._last_release is None:
            self._last_release = now
        elif (
            frame is None
            and now - self._last_release > self._hole_timeout
            and self._has_hole(packet.sequence_number)
        ):
            # The retransmission is not coming: drop what waits behind the hole and start
            # again from the next packet; the Producer resyncs its Consumers on a keyframe.
            self.remove(self._capacity)
            self._origin = None
            self._last_release = now
            self.holes_dropped += 1
            self.discontinuity = True
            pli_flag = True
        return pli_flag, frame

    def _has_hole(self, newest: int) -> bool:
        """Whether a packet is missing between the head and ``newest`` (slow path only)."""
        if self._origin is None:
            return False
        span = uint16_add(newest, -self._origin)
        if span >= self._capacity:
            return False  # ``newest`` is older than the head: a late duplicate
        return any(
            self._packets[(self._origin + i) % self._capacity] is None for i in range(span + 1)
        )

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        packets: list[RtpPacket] = []
        timestamp: int | None = None
        for count in range(self._capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                return None
            if timestamp is None:
                timestamp = packet.timestamp
            elif packet.timestamp != timestamp:
                # The previous frame's marker packet never came; release what we have.
                return self._release(packets, timestamp, count)
            packets.append(packet)
            if packet.marker:
                return self._release(packets, timestamp, count + 1)
        return None

    def _release(self, packets: list[RtpPacket], timestamp: int, count: int) -> JitterFrame | None:
        self.remove(count)
        self._last_release = self._clock()
        if not self._starts_frame(packets[0].payload):
            # The head of this frame was lost before we started (or was dropped).
            self.discontinuity = True
            return None
        data = b"".join(p._data for p in packets)  # type: ignore[attr-defined]
        if self._layer_of is not None:
            return LayeredFrame(data, timestamp, self._layer_of(packets[0].payload))
        return JitterFrame(data=data, timestamp=timestamp)


class AudioPassThrough(JitterBuffer):
    """Every Opus RTP packet is a whole frame: release it at once, drop late duplicates."""

    def __init__(self) -> None:
        super().__init__(capacity=16)
        self._last_seq: int | None = None
        self.discontinuity = False

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        if self._last_seq is not None and not uint16_gt(packet.sequence_number, self._last_seq):
            return False, None
        self._last_seq = packet.sequence_number
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]
