"""A PeerSession: one participant's RTCPeerConnection, carrying what they publish and receive.

The Worker is the only offerer. Publishing uses recvonly transceivers made at the start;
each Consumer rides an OutboundSlot on a sendonly transceiver. Any change (a Consumer added
or closed) marks the session dirty; one negotiation task turns dirty into offers, one at a
time, waiting for each answer, so changes made during a negotiation fold into the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from aiortc import RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from media.codecs import frame_start_check, preferred_codecs
from media.config import MediaConfig
from media.consumer import Consumer, OutboundSlot
from media.errors import MediaError
from media.ice import announce, rtc_configuration
from media.producer import Producer
from media.tap import install_receiver_tap, on_keyframe_request, take_over_bandwidth

if TYPE_CHECKING:
    from media.worker import MediaRoom

log = logging.getLogger(__name__)

Kind = Literal["audio", "video"]


@dataclass(frozen=True)
class SlotDescription:
    """What one m-line of an offer carries, for the client to label what it receives."""

    mid: str
    kind: Kind
    role: Literal["publish", "consume", "idle"]
    participant_id: str | None = None
    producer_id: str | None = None


class SessionSignal(Protocol):
    """What a PeerSession needs from signaling: a way to reach its participant."""

    async def send_offer(self, sdp: str, slots: list[SlotDescription]) -> None: ...


class PeerSession:
    def __init__(
        self,
        room: MediaRoom,
        participant_id: str,
        *,
        publish: tuple[Kind, ...],
        subscribe: bool,
        signal: SessionSignal,
        config: MediaConfig,
    ) -> None:
        self.room = room
        self.participant_id = participant_id
        self.publish = publish
        self.subscribe = subscribe
        self.producers: dict[str, Producer] = {}
        self.consumers: dict[str, Consumer] = {}  # by producer id
        self.closed = False
        self.negotiations = 0
        self._signal = signal
        self._config = config
        self._pc = RTCPeerConnection(rtc_configuration(config))
        self._publish_transceivers: dict[RTCRtpTransceiver, Kind] = {}
        self._slots: list[OutboundSlot] = []
        self._dirty = asyncio.Event()
        self._answer: asyncio.Future[None] | None = None
        self._negotiator: asyncio.Task[None] | None = None
        self._producer_seq = 0

        self._pc.on("track", self._on_track)
        self._pc.on("connectionstatechange", self._on_connection_state)

    def __repr__(self) -> str:
        return f"PeerSession({self.participant_id})"

    @property
    def connection_state(self) -> str:
        return self._pc.connectionState

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for kind in self.publish:
            transceiver = self._pc.addTransceiver(kind, direction="recvonly")
            transceiver.setCodecPreferences(preferred_codecs(kind, self._config.video_codec))
            self._publish_transceivers[transceiver] = kind
        self._negotiator = asyncio.create_task(
            self._negotiate_forever(), name=f"negotiate-{self.participant_id}"
        )
        self.request_negotiation()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._negotiator is not None:
            self._negotiator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._negotiator
        if self._answer is not None and not self._answer.done():
            self._answer.cancel()
        for consumer in list(self.consumers.values()):
            consumer.close()
        self.consumers.clear()
        for producer in self.producers.values():
            producer.close()
        for slot in self._slots:
            slot.stop()
        await self._pc.close()

    # ------------------------------------------------------------ publishing

    def _on_track(self, track: MediaStreamTrack) -> None:
        # Runs synchronously inside setRemoteDescription, before receive() starts the
        # decoder thread: the only moment the tap can be installed.
        transceiver = next(
            (t for t in self._pc.getTransceivers() if t.receiver.track is track), None
        )
        if transceiver is None or transceiver not in self._publish_transceivers:
            log.warning("%r: unexpected incoming %s track ignored", self, track.kind)
            return
        kind = self._publish_transceivers[transceiver]
        self._producer_seq += 1
        producer = Producer(
            f"{self.participant_id}-{kind[0]}{self._producer_seq}",
            self.participant_id,
            kind,
            transceiver.receiver,
            keyframe_interval_s=self._config.keyframe_interval_s,
        )
        install_receiver_tap(
            transceiver.receiver,
            producer.on_frame,
            starts_frame=frame_start_check(self._config.video_codec),
        )
        if kind == "video":
            take_over_bandwidth(transceiver.receiver)
        self.producers[producer.id] = producer
        log.info("%r: Producer %s opened", self, producer.id)
        self.room.producer_opened(producer)

    # ------------------------------------------------------------ consuming

    def consume(self, producer: Producer) -> Consumer:
        if producer.id in self.consumers:
            return self.consumers[producer.id]
        slot = next(
            (s for s in self._slots if s.kind == producer.kind and s.consumer is None), None
        )
        if slot is None:
            slot = OutboundSlot(producer.kind)
            transceiver = self._pc.addTransceiver(slot, direction="sendonly")
            transceiver.setCodecPreferences(
                preferred_codecs(producer.kind, self._config.video_codec)
            )
            on_keyframe_request(transceiver.sender, slot.keyframe_requested)
            slot.transceiver = transceiver
            self._slots.append(slot)
        else:
            assert slot.transceiver is not None
            slot.transceiver.direction = "sendonly"
        consumer = Consumer(producer, slot, self.participant_id)
        self.consumers[producer.id] = consumer
        self.request_negotiation()
        return consumer

    def stop_consuming(self, producer_id: str) -> None:
        consumer = self.consumers.pop(producer_id, None)
        if consumer is None:
            return
        consumer.close()
        slot = consumer.slot
        slot.active = False
        if slot.transceiver is not None:
            slot.transceiver.direction = "inactive"
        self.request_negotiation()

    def _activate_slots(self) -> None:
        """Start forwarding on m-lines the subscriber has accepted, once media can flow."""
        if self._pc.connectionState != "connected":
            return
        for slot in self._slots:
            if slot.consumer is None or slot.active or slot.transceiver is None:
                continue
            if slot.transceiver.currentDirection in ("sendonly", "sendrecv"):
                slot.active = True
                # Whatever was queued before is stale: start clean, from a keyframe.
                slot.consumer.resync()

    # ------------------------------------------------------------ negotiation

    def request_negotiation(self) -> None:
        self._dirty.set()

    async def _negotiate_forever(self) -> None:
        while not self.closed:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._negotiate_once()
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                self.room.session_failed(self, "no answer to the offer in time")
                return
            except Exception:
                log.exception("%r: negotiation failed", self)
                self.room.session_failed(self, "negotiation failed")
                return

    async def _negotiate_once(self) -> None:
        if not self._pc.getTransceivers():
            # An observer alone in the room: an offer without m-lines (and with an empty
            # BUNDLE group) is refused by browsers. The first Consumer will bring an offer.
            return
        offer = await self._pc.createOffer()
        await self._pc.setLocalDescription(offer)
        sdp = announce(self._pc.localDescription.sdp, self._config.ice_addresses)
        self._answer = asyncio.get_running_loop().create_future()
        self.negotiations += 1
        await self._signal.send_offer(sdp, self.describe_slots())
        async with asyncio.timeout(self._config.answer_timeout_s):
            await self._answer
        self._activate_slots()

    def describe_slots(self) -> list[SlotDescription]:
        slots: list[SlotDescription] = []
        for transceiver, kind in self._publish_transceivers.items():
            if transceiver.mid is not None:
                slots.append(SlotDescription(transceiver.mid, kind, "publish"))
        for slot in self._slots:
            if slot.mid is None:
                continue
            kind: Kind = "video" if slot.kind == "video" else "audio"
            if slot.consumer is None:
                slots.append(SlotDescription(slot.mid, kind, "idle"))
            else:
                producer = slot.consumer.producer
                slots.append(
                    SlotDescription(slot.mid, kind, "consume", producer.participant_id, producer.id)
                )
        return slots

    @property
    def awaiting_answer(self) -> bool:
        return self._answer is not None and not self._answer.done()

    async def accept_answer(self, sdp: str) -> None:
        """Apply the participant's answer; a bad one leaves the offer outstanding."""
        if not self.awaiting_answer:
            raise MediaError("unexpected", "no offer is waiting for an answer")
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except Exception as exc:
            # aiortc parses and validates before it applies anything, so the offer is
            # still outstanding and a corrected answer can follow.
            raise MediaError("bad_sdp", f"the answer was rejected: {exc}") from None
        assert self._answer is not None
        if not self._answer.done():
            self._answer.set_result(None)

    async def add_candidate(
        self, candidate: str | None, sdp_mid: str | None, sdp_mline_index: int | None
    ) -> None:
        if candidate is None or candidate == "":
            return  # end of candidates: aiortc needs nothing
        try:
            text = candidate.removeprefix("candidate:")
            parsed = candidate_from_sdp(text)
            parsed.sdpMid = sdp_mid
            parsed.sdpMLineIndex = sdp_mline_index if sdp_mid is None else None
            if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
                parsed.sdpMLineIndex = 0
            await self._pc.addIceCandidate(parsed)
        except Exception as exc:
            raise MediaError("bad_candidate", f"the ICE candidate was rejected: {exc}") from None

    # ------------------------------------------------------------ state

    def _on_connection_state(self) -> None:
        state = self._pc.connectionState
        log.info("%r: connection %s", self, state)
        if state == "connected":
            self._activate_slots()
        elif state == "failed" and not self.closed:
            self.room.session_failed(self, "media connection failed")
