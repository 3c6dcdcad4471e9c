"""Consumers: outgoing copies of a Producer, and the outbound m-lines that carry them.

An ``OutboundSlot`` is the MediaStreamTrack behind one sendonly transceiver of a
subscriber's RTCPeerConnection. Its ``recv()`` returns ``av.Packet``s, so aiortc packetizes
them without encoding. A slot outlives the Consumers it carries: when a participant leaves,
their Consumer closes and the slot idles, ready for the next Producer of its kind, so the
SDP does not grow with every coming and going. (aiortc's sender loop ends for good if its
track ends, so the slot's track never ends while the session lives.)
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

import av
from aiortc import RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media.keyframes import STILL_INTERVAL_S, RepairJudge, Verdict
from media.producer import Producer
from media.rate import LinkReport, LossBasedEstimator
from media.vp8 import BASE, MAX_TID, FrameLayer, TemporalFilter

log = logging.getLogger(__name__)

# How many frames may wait for one subscriber before we drop them and resync at the next
# keyframe: ~1 s of video, ~1 s of audio. Only a stalled event loop fills these.
QUEUE_FRAMES = {"video": 30, "audio": 50}
# How long a Consumer waits for the keyframe it asked for before asking again.
KEYFRAME_RETRY_S = 1.0
# A layer is added back only when the estimate exceeds its rate by this margin, and no
# sooner than this long after the last step down: a link at its limit must not flap.
UPGRADE_MARGIN = 1.15
UPGRADE_HOLD_S = 8.0
# A step down this soon after a step up doubles the hold, up to the most.
PROBE_FAILED_S = 20.0
MAX_UPGRADE_HOLD_S = 120.0
# Base-layer frames sent after each still keyframe (see push).
STILL_TAIL_FRAMES = 2
# What a struggling subscriber's estimate is cut to, of the rate it was being sent.
WEAK_CUT = 0.7

# How a video Consumer is served: every layer the estimate allows, or only still frames
# (keyframes, one per STILL_INTERVAL_S) when even the base layer does not fit.
RateMode = str  # "full" | "reduced" | "stills"


class OutboundSlot(MediaStreamTrack):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.transceiver: RTCRtpTransceiver | None = None
        self.consumer: Consumer | None = None
        # False until the subscriber accepted this m-line and media can flow: frames
        # queued before then would arrive as a stale burst.
        self.active = False
        # The subscriber rejected this m-line (it cannot take the codec): never used again.
        self.rejected = False
        self._frames: collections.deque[av.Packet] = collections.deque()
        self._ready = asyncio.Event()
        self._limit = QUEUE_FRAMES[kind]
        self._closed = False

    @property
    def mid(self) -> str | None:
        return self.transceiver.mid if self.transceiver is not None else None

    def offer(self, packet: av.Packet) -> bool:
        """Queue a frame for sending; False when the subscriber is too far behind."""
        if len(self._frames) >= self._limit:
            self._frames.clear()
            return False
        self._frames.append(packet)
        self._ready.set()
        return True

    def clear(self) -> None:
        self._frames.clear()

    async def recv(self) -> av.Packet:
        while not self._frames:
            if self._closed:
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._frames.popleft()

    def keyframe_requested(self) -> None:
        if self.consumer is not None:
            self.consumer.keyframe_requested()

    def link_report(self, report: LinkReport) -> None:
        if self.consumer is not None:
            self.consumer.link_report(report)

    def stop(self) -> None:
        self._closed = True
        self._ready.set()
        super().stop()


class Consumer:
    """One Producer's frames on one subscriber's slot."""

    def __init__(self, producer: Producer, slot: OutboundSlot, subscriber_id: str) -> None:
        if slot.kind != producer.kind:
            raise ValueError("a Consumer's slot and Producer must be of one kind")
        self.producer = producer
        self.slot = slot
        self.subscriber_id = subscriber_id
        # A subscriber can decode nothing until a keyframe: drop deltas until one comes.
        self.waiting_for_keyframe = producer.kind == "video"
        self.frames_sent = 0
        self.frames_dropped = 0
        self.frames_paused = 0
        self.keyframe_requests_received = 0
        # Subscriber PLIs that did not reach the publisher (media/keyframes.py).
        self.keyframe_requests_ignored = 0
        # Frames of temporal layers above what this subscriber's link carries, or deltas
        # while it is on still frames.
        self.frames_layer_dropped = 0
        self.closed = False
        self.layers = TemporalFilter()
        self.stills = False
        # Set by the session for video: what this subscriber's link can carry (media/rate.py).
        self.estimator: LossBasedEstimator | None = None
        # Told when the rate mode changes ("full", "reduced", "stills").
        self.on_rate_mode: Callable[[Consumer, RateMode], None] | None = None
        self.rate_mode: RateMode = "full"
        # The last few mode changes: (monotonic time, mode, estimate, last loss), for stats.
        self.rate_changes: collections.deque[tuple[float, RateMode, int, float | None]] = (
            collections.deque(maxlen=16)
        )
        self._judge = RepairJudge()
        self._stepped_down_at = -1e9
        self._stepped_up_at = -1e9
        self._hold_s = UPGRADE_HOLD_S
        self._still_asked_at = -1e9
        self._still_tail = 0
        # Paused (mediasoup's Consumer.pause): this subscriber is sent nothing of it.
        self.paused = False
        self._asked_at = time.monotonic()
        slot.clear()
        slot.consumer = self
        producer.consumers.add(self)
        # On a slot not yet accepted by the subscriber, a keyframe now would be dropped and
        # only delay (by the PLI interval) the one asked for when the slot activates.
        if slot.active:
            producer.request_keyframe()

    def __repr__(self) -> str:
        return f"Consumer({self.producer.id} -> {self.subscriber_id}, mid={self.slot.mid})"

    def push(self, packet: av.Packet, keyframe: bool, layer: FrameLayer | None = None) -> None:
        if not self.slot.active:
            return
        if self.paused:
            self.frames_paused += 1
            return
        if self.stills:
            if keyframe:
                self._still_tail = STILL_TAIL_FRAMES
            elif self._still_tail > 0 and (layer or BASE).tid == 0:
                # A frame or two after the still, so the subscriber sees the packets that
                # follow it and NACKs a lost tail: on stills alone nothing would follow.
                self._still_tail -= 1
            else:
                # Only keyframes fit this subscriber's link: ask for a fresh one now and then.
                self.frames_layer_dropped += 1
                now = time.monotonic()
                if now - self._still_asked_at >= STILL_INTERVAL_S:
                    self._still_asked_at = now
                    self.producer.request_repair()
                return
        if self.waiting_for_keyframe:
            if not keyframe:
                self.frames_dropped += 1
                # A browser sends a keyframe only when asked, so one lost or ignored request
                # would leave this subscriber black for good: ask again while waiting.
                now = time.monotonic()
                if now - self._asked_at >= KEYFRAME_RETRY_S:
                    self._asked_at = now
                    self.producer.request_keyframe()
                return
            self.waiting_for_keyframe = False
        if self.producer.kind == "video" and not self.layers.forward(layer or BASE, keyframe):
            self.frames_layer_dropped += 1
            return
        if self.slot.offer(packet):
            self.frames_sent += 1
        else:
            self.frames_dropped += 1
            log.warning("%r fell behind; resyncing at the next keyframe", self)
            self.resync()

    # ------------------------------------------------------------ the subscriber's link

    def keyframe_requested(self) -> None:
        """The subscriber sent a PLI or FIR for this stream: judged here, per subscriber,
        before anything reaches the publisher (media/keyframes.py)."""
        self.keyframe_requests_received += 1
        if self.paused or self.waiting_for_keyframe or self.stills:
            # Paused: it is sent nothing. Waiting: it asks for itself, once a second. On
            # still frames: one comes every few seconds anyway.
            self.keyframe_requests_ignored += 1
            return
        verdict = self._judge.judge(time.monotonic())
        if verdict is Verdict.FORWARD:
            self.producer.request_repair()
        elif verdict is Verdict.WEAK:
            self.keyframe_requests_ignored += 1
            self.step_down()
        else:
            self.keyframe_requests_ignored += 1

    def link_report(self, report: LinkReport, now: float | None = None) -> None:
        """A receiver report (or REMB) from the subscriber about this stream."""
        if self.estimator is None or self.producer.kind != "video":
            return
        self.estimator.update(report, now)
        self.choose_layers()

    def step_down(self) -> None:
        """The subscriber's decoder keeps failing: cut its estimate below what it is sent."""
        self._judge.forgive()
        rates = self.producer.layer_rates.cumulative_bps()
        if self.estimator is None or not rates:
            return
        sent = rates[min(self.layers.current, len(rates) - 1)]
        self.estimator.cap(sent * WEAK_CUT)
        self.choose_layers()

    def choose_layers(self) -> None:
        """Forward the temporal layers whose rate fits the estimate; still frames when not
        even the base layer does."""
        if self.estimator is None:
            return
        rates = self.producer.layer_rates.cumulative_bps()
        if not rates:
            return
        bps = self.estimator.bps
        now = time.monotonic()
        fits = [tid for tid, rate in enumerate(rates) if rate <= bps]
        best = fits[-1] if fits else -1
        current = -1 if self.stills else min(self.layers.target, len(rates) - 1)
        if best > current:
            # Up one step at a time, with margin, and not right after going down.
            if now - self._stepped_down_at < self._hold_s:
                return
            if rates[current + 1] * UPGRADE_MARGIN > bps:
                return
            best = current + 1
            self._stepped_up_at = now
        elif best == current:
            return
        else:
            # A step up that did not last was a failed probe (and, from still frames, cost
            # the publisher a keyframe): wait twice as long before the next one.
            if now - self._stepped_up_at < PROBE_FAILED_S:
                self._hold_s = min(self._hold_s * 2, MAX_UPGRADE_HOLD_S)
            else:
                self._hold_s = UPGRADE_HOLD_S
            self._stepped_down_at = now
        if best < 0:
            if not self.stills:
                self.stills = True
                # The keyframe now forwarded starts the stills; any later one refreshes it.
                self._still_asked_at = -1e9
            self._set_mode("stills")
            return
        if self.stills:
            # Deltas reference frames it never got: start again at a keyframe.
            self.stills = False
            self.resync()
        self.layers.set_target(MAX_TID if best >= len(rates) - 1 else best)
        self._set_mode("full" if best >= len(rates) - 1 else "reduced")

    def _set_mode(self, mode: RateMode) -> None:
        if mode == self.rate_mode:
            return
        log.info(
            "%r: video now %s (estimate %s bps, layers %s bps)",
            self,
            mode,
            self.estimator and self.estimator.bps,
            self.producer.layer_rates.cumulative_bps(),
        )
        self.rate_mode = mode
        if self.estimator is not None:
            self.rate_changes.append(
                (time.monotonic(), mode, self.estimator.bps, self.estimator.loss)
            )
        if self.on_rate_mode is not None:
            self.on_rate_mode(self, mode)

    # ------------------------------------------------------------ pause, resync

    def pause(self) -> None:
        self.paused = True
        self.slot.clear()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.resync()

    def resync(self) -> None:
        """Drop everything until the next keyframe, and ask for one."""
        if self.producer.kind != "video":
            return
        self.slot.clear()
        self.waiting_for_keyframe = True
        self._asked_at = time.monotonic()
        self.producer.request_keyframe()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.producer.consumers.discard(self)
        if self.slot.consumer is self:
            self.slot.consumer = None
            self.slot.clear()
