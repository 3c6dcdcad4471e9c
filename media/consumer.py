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

import av
from aiortc import RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media.producer import Producer

log = logging.getLogger(__name__)

# How many frames may wait for one subscriber before we drop them and resync at the next
# keyframe: ~1 s of video, ~1 s of audio. Only a stalled event loop fills these.
QUEUE_FRAMES = {"video": 30, "audio": 50}
# How long a Consumer waits for the keyframe it asked for before asking again.
KEYFRAME_RETRY_S = 1.0


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
        # A paused Consumer sends nothing: its subscriber's PLIs must not reach the publisher.
        if self.consumer is not None and not self.consumer.paused:
            self.consumer.keyframe_requests_received += 1
            self.consumer.producer.request_keyframe()

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
        self.closed = False
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

    def push(self, packet: av.Packet, keyframe: bool) -> None:
        if not self.slot.active:
            return
        if self.paused:
            self.frames_paused += 1
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
        if self.slot.offer(packet):
            self.frames_sent += 1
        else:
            self.frames_dropped += 1
            log.warning("%r fell behind; resyncing at the next keyframe", self)
            self.resync()

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
