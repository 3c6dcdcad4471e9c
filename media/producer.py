"""A Producer: one incoming track of one participant, fanned out to its Consumers."""

from __future__ import annotations

import asyncio
import logging
import time
from fractions import Fraction
from typing import TYPE_CHECKING, Protocol

import av
from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from media.codecs import CLOCK_RATE, TIME_BASE, is_keyframe
from media.keyframes import REPAIR_INTERVAL_S
from media.rate import LayerRates
from media.tap import request_keyframe
from media.vp8 import FrameLayer

if TYPE_CHECKING:
    from media.consumer import Consumer

log = logging.getLogger(__name__)

# One clock for every Producer of every Worker: a Producer's first frame is stamped with the
# wall time since this fixed epoch, then follows the publisher's RTP clock. A reused outbound
# m-line sees timestamps carry on when it switches from one Producer to another, recorded
# tracks line up, and so do tracks recorded by another Worker process (or machine, with
# NTP) after a failover.
_EPOCH = 1_700_000_000.0


class RoomSink(Protocol):
    """Something that sees every Producer of a room and every frame, e.g. a recorder.

    Called on the Worker's event loop; it must not block and must not raise.
    """

    def producer_opened(self, producer: Producer) -> None: ...

    def producer_closed(self, producer: Producer) -> None: ...

    def frame(
        self, producer: Producer, data: bytes, pts: int, time_base: Fraction, keyframe: bool
    ) -> None: ...


class Producer:
    def __init__(
        self,
        producer_id: str,
        participant_id: str,
        kind: str,
        receiver: RTCRtpReceiver,
        *,
        mime_type: str,
        keyframe_interval_s: float,
        source: str | None = None,
    ) -> None:
        self.id = producer_id
        self.participant_id = participant_id
        self.kind = kind
        # What it carries (media.client.Source): "camera"/"microphone", or an extra video
        # Producer's "screen"/"camera2".
        self.source = source or ("camera" if kind == "video" else "microphone")
        self.receiver = receiver
        self.consumers: set[Consumer] = set()
        # The room's sinks (the same list object, so attaching one reaches every Producer).
        self.sinks: list[RoomSink] = []
        # The codec it speaks, e.g. "video/VP8": its room's, the only one its m-line offers.
        self.mime_type = mime_type
        self.closed = False
        # Paused (mediasoup's Producer.pause): nothing is forwarded or recorded, whatever
        # the publisher sends. How the server mutes someone the client cannot unmute.
        self.paused = False
        self._clock_rate = CLOCK_RATE[kind]
        self._time_base = TIME_BASE[kind]
        self._pts_offset: int | None = None
        self._keyframe_interval = keyframe_interval_s
        self._last_pli = -1e9
        self._pli_pending: asyncio.TimerHandle | None = None
        self._pli_pending_at = 0.0
        # Bitrate per temporal layer, for Consumers choosing what fits their link.
        self.layer_rates = LayerRates()
        # Whether the publisher tags its frames with temporal layers (VP8 L1T2/L1T3).
        self.layered = False
        # counters, read by stats and tests
        self.frames = 0
        self.keyframes = 0
        self.bytes = 0
        self.discontinuities = 0
        self.keyframe_requests_sent = 0
        # Of those, asked for on behalf of subscribers' own PLIs (media/keyframes.py).
        self.repair_requests_sent = 0
        self.frames_paused = 0

    def __repr__(self) -> str:
        return f"Producer({self.id}, {self.kind}, consumers={len(self.consumers)})"

    def on_frame(self, codec: RTCRtpCodecParameters, frame: JitterFrame, lost: bool) -> None:
        """Called by the tap, on the event loop, once per reassembled encoded frame."""
        if self.closed:
            return
        if self.paused:
            self.frames_paused += 1
            return
        if self._pts_offset is None:
            now = round((time.time() - _EPOCH) * self._clock_rate)
            self._pts_offset = now - frame.timestamp
        data = frame.data
        keyframe = is_keyframe(codec.mimeType, data)
        self.frames += 1
        self.bytes += len(data)
        layer: FrameLayer | None = getattr(frame, "layer", None)
        if self.kind == "video":
            if layer is not None:
                self.layered = True
            self.layer_rates.add(
                layer.tid if layer is not None else 0, len(data), frame.timestamp / 90000
            )
        if keyframe and self.kind == "video":
            self.keyframes += 1
        if lost and self.kind == "video":
            self.discontinuities += 1
            for consumer in self.consumers:
                consumer.resync()
        # One packet, shared by every Consumer: packetizing reads it and never writes it.
        packet = av.Packet(data)
        packet.pts = self._pts_offset + frame.timestamp
        packet.time_base = self._time_base
        for consumer in tuple(self.consumers):
            consumer.push(packet, keyframe, layer)
        for sink in self.sinks:
            sink.frame(self, data, packet.pts, self._time_base, keyframe)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        """Forward again; video Consumers wait for a keyframe, which is asked for at once."""
        if not self.paused:
            return
        self.paused = False
        if self.kind == "video":
            for consumer in tuple(self.consumers):
                consumer.resync()

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe (PLI), at most once per interval.

        A request inside the interval is not dropped but deferred to its end: the Consumer
        that asked is still waiting, and the keyframe that answered the earlier request may
        have come before it started waiting.
        """
        self._ask(self._keyframe_interval, repair=False)

    def request_repair(self) -> None:
        """Ask for a keyframe on behalf of a subscriber's own PLI, already judged worth it
        (media/keyframes.py): at most once per REPAIR_INTERVAL_S since any keyframe request,
        so any number of lossy subscribers cost the publisher one keyframe per interval."""
        self._ask(max(self._keyframe_interval, REPAIR_INTERVAL_S), repair=True)

    def _ask(self, interval: float, *, repair: bool) -> None:
        if self.kind != "video" or self.closed:
            return
        now = time.monotonic()
        wait = self._last_pli + interval - now
        if self._pli_pending is not None:
            if self._pli_pending_at <= now + max(0.0, wait):
                return  # the request already pending comes no later: it answers this one too
            self._pli_pending.cancel()
            self._pli_pending = None
        if wait <= 0:
            self._send_pli(repair)
        else:
            loop = asyncio.get_running_loop()
            self._pli_pending_at = now + wait
            self._pli_pending = loop.call_later(wait, self._send_pli, repair)

    def _send_pli(self, repair: bool = False) -> None:
        self._pli_pending = None
        if self.closed:
            return
        self._last_pli = time.monotonic()
        self.keyframe_requests_sent += 1
        self.repair_requests_sent += repair
        task = asyncio.ensure_future(request_keyframe(self.receiver))
        task.add_done_callback(_log_failure)

    def close(self) -> None:
        self.closed = True
        if self._pli_pending is not None:
            self._pli_pending.cancel()
            self._pli_pending = None
        for consumer in tuple(self.consumers):
            consumer.close()


def _log_failure(task: asyncio.Future[bool]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("keyframe request failed: %s", task.exception())
