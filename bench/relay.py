"""The naive baseline: aiortc's MediaRelay, decode once and re-encode per subscriber.

A mode of the bench, never of the product. It swaps the Worker's PeerSession for a subclass
that installs no encoded-frame tap: aiortc's decoder thread decodes every incoming frame,
``MediaRelay`` hands the decoded frame to one proxy track per subscriber, and each
subscriber's RTCRtpSender encodes it again in its own thread. The signaling protocol, the
Worker, the rooms and the negotiation are the product's own, so the same bots drive both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiortc import RTCRtpTransceiver
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

import media.worker
from media.client import Kind, SlotDescription
from media.codecs import preferred_codecs
from media.session import PeerSession

log = logging.getLogger(__name__)

_RELAY = MediaRelay()


class RelayProducer:
    """One incoming track, decoded by aiortc and relayed as decoded frames."""

    def __init__(self, producer_id: str, participant_id: str, kind: str, track: MediaStreamTrack):
        self.id = producer_id
        self.participant_id = participant_id
        self.kind = kind
        self.track = track
        self.closed = False
        self.paused = False  # the Worker's stats count paused Producers; the baseline has none
        # What the Worker reports of every Producer (the baseline publishes the main ones only).
        self.source = "camera" if kind == "video" else "microphone"
        # MediaRelay reads its source only while someone listens; until the first subscriber
        # the decoded frames would pile up in the track's unbounded queue. A sink keeps the
        # relay reading (the decoder runs regardless: that is the point of this baseline).
        self._sink = _RELAY.subscribe(track, buffered=False)
        self._drain = asyncio.ensure_future(self._drain_sink())

    async def _drain_sink(self) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while not self.closed:
                await self._sink.recv()

    def close(self) -> None:
        self.closed = True
        self._drain.cancel()
        self._sink.stop()


class RelayConsumer:
    def __init__(
        self, producer: RelayProducer, transceiver: RTCRtpTransceiver, proxy: MediaStreamTrack
    ) -> None:
        self.producer = producer
        self.transceiver = transceiver
        self.proxy = proxy
        self.closed = False
        self.paused = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.proxy.stop()


class RelayPeerSession(PeerSession):
    """A PeerSession whose Producers are decoded and whose Consumers encode."""

    def _on_track(self, track: MediaStreamTrack) -> None:
        transceiver = next(
            (t for t in self._pc.getTransceivers() if t.receiver.track is track), None
        )
        if transceiver is None or transceiver not in self._publish_transceivers:
            return
        kind = self._publish_transceivers[transceiver]
        self._producer_seq += 1
        producer = RelayProducer(
            f"{self.participant_id}-{kind[0]}{self._producer_seq}",
            self.participant_id,
            kind,
            track,
        )
        self.producers[producer.id] = producer  # type: ignore[assignment]
        self.room.producer_opened(producer)  # type: ignore[arg-type]

    def consume(self, producer: RelayProducer) -> RelayConsumer:  # type: ignore[override]
        existing = self.consumers.get(producer.id)
        if existing is not None:
            return existing  # type: ignore[return-value]
        # buffered (aiortc's default), as a naive relay would be written: every decoded frame
        # is encoded for every subscriber, however late.
        proxy = _RELAY.subscribe(producer.track)
        transceiver = self._pc.addTransceiver(proxy, direction="sendonly")
        transceiver.setCodecPreferences(preferred_codecs(producer.kind, self.room.video_codec))
        consumer = RelayConsumer(producer, transceiver, proxy)
        self.consumers[producer.id] = consumer  # type: ignore[assignment]
        self.request_negotiation()
        return consumer

    def stop_consuming(self, producer_id: str) -> None:
        consumer = self.consumers.pop(producer_id, None)
        if consumer is None:
            return
        consumer.close()
        consumer.transceiver.direction = "inactive"  # type: ignore[attr-defined]
        self.request_negotiation()

    def describe_slots(self) -> list[SlotDescription]:
        slots: list[SlotDescription] = []
        for transceiver, kind in self._publish_transceivers.items():
            if transceiver.mid is not None:
                slots.append(SlotDescription(transceiver.mid, kind, "publish"))
        by_transceiver = {c.transceiver: c for c in self.consumers.values()}  # type: ignore[attr-defined]
        for transceiver in self._pc.getTransceivers():
            if transceiver in self._publish_transceivers or transceiver.mid is None:
                continue
            consumer = by_transceiver.get(transceiver)
            kind: Kind = "video" if transceiver.kind == "video" else "audio"
            if consumer is None:
                slots.append(SlotDescription(transceiver.mid, kind, "idle"))
            else:
                producer = consumer.producer
                slots.append(
                    SlotDescription(
                        transceiver.mid, kind, "consume", producer.participant_id, producer.id
                    )
                )
        return slots


def install() -> None:
    """Make every Worker in this process open RelayPeerSessions."""
    media.worker.PeerSession = RelayPeerSession  # type: ignore[misc]
    log.warning("bench baseline: aiortc MediaRelay, decode once + re-encode per subscriber")
