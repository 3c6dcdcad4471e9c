"""A PeerSession: one participant's RTCPeerConnection, carrying what they publish and receive.

The Worker is the only offerer. Publishing uses recvonly transceivers made at the start,
plus one ExtraLine per extra video Producer (a screen, a second camera) added later;
each Consumer rides an OutboundSlot on a sendonly transceiver. Any change (a Consumer added
or closed) marks the session dirty; one negotiation task turns dirty into offers, one at a
time, waiting for each answer, so changes made during a negotiation fold into the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from aiortc import RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from media.answer import AnswerError, check_answer
from media.client import (
    MAX_EXTRA_PRODUCERS,
    ExtraSource,
    Kind,
    SlotDescription,
    Source,
    main_source,
)
from media.codecs import frame_start_check, mime_type, preferred_codecs
from media.config import MediaConfig
from media.consumer import Consumer, OutboundSlot
from media.errors import MediaError, loggable
from media.extra import ExtraLine
from media.ice import announce, rtc_configuration
from media.producer import Producer
from media.rate import LossBasedEstimator
from media.tap import (
    drop_unrequested_media,
    install_receiver_tap,
    on_keyframe_request,
    on_link_report,
    take_over_bandwidth,
    tolerate_close_while_connecting,
)
from media.vp8 import frame_layer

if TYPE_CHECKING:
    from media.worker import MediaRoom

log = logging.getLogger(__name__)

# Remote ICE candidates one session takes: a browser sends a few per interface and protocol.
MAX_REMOTE_CANDIDATES = 64


class PeerSession:
    def __init__(
        self,
        room: MediaRoom,
        participant_id: str,
        *,
        publish: tuple[Kind, ...],
        subscribe: bool,
        config: MediaConfig,
        video: bool = True,
    ) -> None:
        """``video``: whether the participant can use the room's video codec at all."""
        self.room = room
        self.participant_id = participant_id
        self.publish = publish if video else tuple(k for k in publish if k != "video")
        self.subscribe = subscribe
        self.producers: dict[str, Producer] = {}
        self.consumers: dict[str, Consumer] = {}  # by producer id
        self.closed = False
        self._failed = False
        self.negotiations = 0
        # RTP packets that arrived on an m-line we never asked to receive, dropped unread.
        self.unrequested_rtp_packets = 0
        self.remote_candidates = 0
        self._config = config
        self._pc = RTCPeerConnection(rtc_configuration(config))
        tolerate_close_while_connecting(self._pc)
        self._publish_transceivers: dict[RTCRtpTransceiver, Kind] = {}
        # Extra video m-lines (at most MAX_EXTRA_PRODUCERS, reused once idle).
        self._extras: list[ExtraLine] = []
        self._slots: list[OutboundSlot] = []
        self._dirty = asyncio.Event()
        self._answer: asyncio.Future[None] | None = None
        self._negotiator: asyncio.Task[None] | None = None
        self._producer_seq = 0
        # Kinds the participant cannot send, or receive: the room's codec is not theirs, or
        # their answer rejected such an m-line. Nothing of that kind is offered to them again.
        self._cannot_send: set[Kind] = set() if video else {"video"}
        self._cannot_receive: set[Kind] = set() if video else {"video"}
        self._rejected: set[RTCRtpTransceiver] = set()
        self._told_video_unavailable = False

        self._pc.on("track", self._on_track)
        self._pc.on("connectionstatechange", self._on_connection_state)

    def __repr__(self) -> str:
        return f"PeerSession({self.participant_id})"

    @property
    def connection_state(self) -> str:
        return self._pc.connectionState

    @property
    def transceivers(self) -> list[RTCRtpTransceiver]:
        """Every m-line of the connection, for the Worker's meters (media/meter.py)."""
        return self._pc.getTransceivers()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if "video" in self._cannot_send:
            self._tell_video_unavailable(
                f"this consultation's video codec is {self.room.video_codec}, which this "
                "client cannot use: joined with audio only"
            )
        for kind in self.publish:
            transceiver = self._pc.addTransceiver(kind, direction="recvonly")
            transceiver.setCodecPreferences(preferred_codecs(kind, self.room.video_codec))
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
        for line in self._extras:
            line.producer = None
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
        extra = next((x for x in self._extras if x.transceiver is transceiver), None)
        if extra is not None and transceiver not in self._rejected:
            # The tap stays for the m-line's life and forwards to whichever Producer it
            # carries now: aiortc fires "track" once per transceiver, not per reuse.
            install_receiver_tap(
                extra.transceiver.receiver,
                extra.on_frame,
                starts_frame=frame_start_check(self.room.video_codec),
            )
            take_over_bandwidth(extra.transceiver.receiver)
            extra.tapped = True
            self._open_extras()
            return
        if (
            transceiver is None
            or transceiver not in self._publish_transceivers
            or transceiver in self._rejected
        ):
            # Answers are checked against our offer, so this should never happen; if one
            # gets through, nothing it sends may reach a decoder or a buffer.
            log.warning("%r: unexpected incoming %s track; dropping its media", self, track.kind)
            if transceiver is not None:
                drop_unrequested_media(transceiver.receiver, self._count_unrequested)
            return
        kind = self._publish_transceivers[transceiver]
        producer = self._new_producer(kind, transceiver, main_source(kind))
        install_receiver_tap(
            transceiver.receiver,
            producer.on_frame,
            starts_frame=frame_start_check(self.room.video_codec),
            layer_of=frame_layer if kind == "video" and self.room.video_codec == "VP8" else None,
        )
        if kind == "video":
            take_over_bandwidth(transceiver.receiver)
        self._opened(producer)

    def _new_producer(self, kind: Kind, transceiver: RTCRtpTransceiver, source: Source) -> Producer:
        self._producer_seq += 1
        return Producer(
            f"{self.participant_id}-{kind[0]}{self._producer_seq}",
            self.participant_id,
            kind,
            transceiver.receiver,
            mime_type=mime_type(kind, self.room.video_codec),
            keyframe_interval_s=self._config.keyframe_interval_s,
            source=source,
        )

    def _opened(self, producer: Producer) -> None:
        self.producers[producer.id] = producer
        log.info("%r: Producer %s (%s) opened", self, producer.id, producer.source)
        self.room.producer_opened(producer)

    # ------------------------------------------------------------ extra video Producers

    def publish_extra(self, source: ExtraSource) -> None:
        """Ask the participant for a video track of ``source`` on an m-line of its own."""
        if self.closed:
            raise MediaError("unexpected", "the media session is closed")
        if "video" in self._cannot_send:
            raise MediaError("unexpected", "this client cannot send video in this consultation")
        if any(x.source == source for x in self._extras):
            raise MediaError("unexpected", f"{source} is published already")
        if sum(x.source is not None for x in self._extras) >= MAX_EXTRA_PRODUCERS:
            raise MediaError(
                "too_many_producers", f"at most {MAX_EXTRA_PRODUCERS} extra video tracks"
            )
        line = next(
            (x for x in self._extras if x.source is None and x.transceiver not in self._rejected),
            None,
        )
        if line is None:
            transceiver = self._pc.addTransceiver("video", direction="recvonly")
            transceiver.setCodecPreferences(preferred_codecs("video", self.room.video_codec))
            line = ExtraLine(transceiver)
            self._extras.append(line)
        else:
            line.transceiver.direction = "recvonly"
        line.source = source
        self.request_negotiation()

    def unpublish_extra(self, source: ExtraSource) -> None:
        line = next((x for x in self._extras if x.source == source), None)
        if line is None:
            return
        line.source = None
        line.transceiver.direction = "inactive"
        self._close_extra(line)
        self.request_negotiation()

    def _close_extra(self, line: ExtraLine) -> None:
        producer, line.producer = line.producer, None
        if producer is not None:
            self.producers.pop(producer.id, None)
            producer.close()
            log.info("%r: Producer %s (%s) closed", self, producer.id, producer.source)
            self.room.producer_closed(producer)

    def _open_extras(self) -> None:
        """A Producer for each extra m-line the participant now sends on: a new m-line's
        on its track event, a reused one's once an answer has made it receive again."""
        for line in self._extras:
            if line.source is None or line.producer is not None or not line.tapped:
                continue
            if line.transceiver in self._rejected:
                continue
            if line.transceiver.currentDirection not in ("recvonly", "sendrecv"):
                continue
            line.producer = self._new_producer("video", line.transceiver, line.source)
            self._opened(line.producer)

    def _count_unrequested(self) -> None:
        self.unrequested_rtp_packets += 1

    # ------------------------------------------------------------ consuming

    def consume(self, producer: Producer) -> Consumer | None:
        """Send ``producer`` to this participant; None if they cannot take its kind."""
        if producer.id in self.consumers:
            return self.consumers[producer.id]
        if producer.kind in self._cannot_receive:
            return None
        slot = next(
            (
                s
                for s in self._slots
                if s.kind == producer.kind and s.consumer is None and not s.rejected
            ),
            None,
        )
        if slot is None:
            slot = OutboundSlot(producer.kind)
            transceiver = self._pc.addTransceiver(slot, direction="sendonly")
            transceiver.setCodecPreferences(preferred_codecs(producer.kind, self.room.video_codec))
            on_keyframe_request(transceiver.sender, slot.keyframe_requested)
            if producer.kind == "video":
                on_link_report(transceiver.sender, slot.link_report)
            slot.transceiver = transceiver
            self._slots.append(slot)
        else:
            assert slot.transceiver is not None
            slot.transceiver.direction = "sendonly"
        consumer = Consumer(producer, slot, self.participant_id)
        if producer.kind == "video":
            # Each subscriber is served at the rate its own link carries (media/rate.py).
            consumer.estimator = LossBasedEstimator(self._config.max_video_bitrate)
            consumer.on_rate_mode = self._on_rate_mode
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
            if slot.consumer is None or slot.active or slot.transceiver is None or slot.rejected:
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
                self._fail("no answer to the offer in time")
                return
            except Exception:
                if self._failed:
                    return  # the connection died under the offer: reported already
                log.exception("%r: negotiation failed", self)
                self._fail("negotiation failed")
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
        # The offer leaves as an event; the answer comes back through accept_answer().
        self.room.send_offer(self, sdp, self.describe_slots())
        async with asyncio.timeout(self._config.answer_timeout_s):
            await self._answer
        self._open_extras()
        self._activate_slots()

    def describe_slots(self) -> list[SlotDescription]:
        slots: list[SlotDescription] = []
        for transceiver, kind in self._publish_transceivers.items():
            if transceiver.mid is not None:
                slots.append(
                    SlotDescription(transceiver.mid, kind, "publish", source=main_source(kind))
                )
        for line in self._extras:
            mid = line.transceiver.mid
            if mid is not None and line.source is not None:
                slots.append(SlotDescription(mid, "video", "publish", source=line.source))
            elif mid is not None:
                slots.append(SlotDescription(mid, "video", "idle"))
        for slot in self._slots:
            if slot.mid is None:
                continue
            kind: Kind = "video" if slot.kind == "video" else "audio"
            if slot.consumer is None:
                slots.append(SlotDescription(slot.mid, kind, "idle"))
            else:
                producer = slot.consumer.producer
                slots.append(
                    SlotDescription(
                        slot.mid,
                        kind,
                        "consume",
                        producer.participant_id,
                        producer.id,
                        producer.source,  # type: ignore[arg-type]
                    )
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
            # aiortc would apply any direction the answer states, receiving (and decoding)
            # where we never asked to: check it against our offer first.
            sdp, rejected = check_answer(self._pc.localDescription.sdp, sdp)
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except Exception as exc:
            # Both check before anything is applied, so the offer is still outstanding and
            # a corrected answer can follow. Logged (never the SDP: it holds addresses) so a
            # later "no answer" has its cause next to it.
            reason = str(exc) if isinstance(exc, AnswerError) else f"{type(exc).__name__}: {exc}"
            log.info("%r: answer refused: %s", self, loggable(reason))
            raise MediaError("bad_sdp", f"the answer was rejected: {exc}") from None
        self._reject(rejected)
        assert self._answer is not None
        if not self._answer.done():
            self._answer.set_result(None)

    def _reject(self, mids: tuple[str, ...]) -> None:
        """The participant rejected these m-lines (port 0): they stay inactive for good.

        Every m-line of a kind offers the same one codec, so a participant that rejects one
        cannot take that kind in that direction at all: no Producer opens on a rejected
        publish m-line, and no Consumer of that kind is made for them again.
        """
        for mid in mids:
            transceiver = next(t for t in self._pc.getTransceivers() if t.mid == mid)
            if transceiver in self._rejected:
                continue
            self._rejected.add(transceiver)
            transceiver.direction = "inactive"
            kind: Kind = "video" if transceiver.kind == "video" else "audio"
            extra = next((x for x in self._extras if x.transceiver is transceiver), None)
            if extra is not None:
                extra.source = None
                self._close_extra(extra)
            publish = transceiver in self._publish_transceivers or extra is not None
            log.info(
                "%r: %s %s m-line %s rejected", self, kind, "publish" if publish else "consume", mid
            )
            if publish:
                self._cannot_send.add(kind)
            else:
                self._cannot_receive.add(kind)
                slot = next(s for s in self._slots if s.transceiver is transceiver)
                slot.rejected = True
                slot.active = False
                if slot.consumer is not None:
                    self.consumers.pop(slot.consumer.producer.id, None)
                    slot.consumer.close()
            if kind == "video":
                direction = "send" if publish else "receive"
                self._tell_video_unavailable(
                    f"the answer rejected a video m-line: this client cannot {direction} "
                    f"{self.room.video_codec} video; going on without it"
                )
        # Consumers of a kind they cannot receive go too; their slots idle for good.
        for producer_id, consumer in list(self.consumers.items()):
            if consumer.producer.kind in self._cannot_receive:
                self.stop_consuming(producer_id)

    def _on_rate_mode(self, consumer: Consumer, mode: str) -> None:
        """Tell the subscriber when a video it receives is lowered to fit its link (fewer
        frames per second, or still frames only) and when it is back to full."""
        if consumer.closed or self.closed:
            return
        self.room.notice(self, "video_rate", f"{consumer.producer.participant_id} {mode}")

    def _tell_video_unavailable(self, reason: str) -> None:
        if not self._told_video_unavailable:
            self._told_video_unavailable = True
            self.room.notice(self, "video_unavailable", reason)

    async def add_candidate(
        self, candidate: str | None, sdp_mid: str | None, sdp_mline_index: int | None
    ) -> None:
        if candidate is None or candidate == "":
            return  # end of candidates: aiortc needs nothing
        # aioice keeps every remote candidate, re-sorts its check list on each, and sends
        # checks to whatever address a client names: a browser gathers a handful.
        if self.remote_candidates >= MAX_REMOTE_CANDIDATES:
            raise MediaError("bad_candidate", f"more than {MAX_REMOTE_CANDIDATES} candidates")
        self.remote_candidates += 1
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
        elif state in ("failed", "closed"):
            # Both are terminal. "closed" without our close() is the peer's DTLS goodbye or,
            # when its UDP is blocked, aioice giving up on consent (RFC 7675, ~30 s): the
            # media will not come back on this connection, whatever the WebSocket says.
            self._fail(f"media connection {state}")

    def _fail(self, reason: str) -> None:
        """Report this session as dead, once; signaling ends the participant's session."""
        if self.closed or self._failed:
            return
        self._failed = True
        self.room.session_failed(self, reason)
