"""The encoded-frame tap: the one place that touches aiortc's private internals.

aiortc has no public way to receive encoded frames or to learn of a subscriber's keyframe
request on a track it does not encode (its maintainers declined a "no decode" option,
issues #449 and #544). So, per receiver, we swap the decoder queue for one whose ``put``
hands each reassembled frame to our callback, and the jitter buffer for one that releases
frames without aiortc's extra delay. The decoder thread still starts but only ever sees
the stop sentinel: nothing is decoded. aiortc is pinned to an exact version for this, and
tests/integration/test_tap.py fails loudly when an upgrade moves these internals.
"""

from __future__ import annotations

import logging
import queue
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiortc
import aiortc.clock
from aiortc import RTCDtlsTransport, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
    unpack_remb_fci,
)

from media.jitter import AudioPassThrough, VideoFrameAssembler
from media.rate import LinkReport
from media.vp8 import FrameLayer

log = logging.getLogger(__name__)

TESTED_AIORTC = "1.16.0"

CLOCK_RATE_OF = {"audio": 48000, "video": 90000}

_QUEUE = "_RTCRtpReceiver__decoder_queue"
_JITTER = "_RTCRtpReceiver__jitter_buffer"
_THREAD = "_RTCRtpReceiver__decoder_thread"
_ESTIMATOR = "_RTCRtpReceiver__remote_bitrate_estimator"
_RTCP_SSRC = "_RTCRtpReceiver__rtcp_ssrc"
_CONNECT = "_RTCPeerConnection__connect"
_REMOTE_STREAMS = "_RTCRtpReceiver__remote_streams"
_RTX_SSRC = "_RTCRtpReceiver__rtx_ssrc"
_SENT_PACKETS = "_RTCRtpSender__packet_count"
_SENT_OCTETS = "_RTCRtpSender__octet_count"
_SENDER_RTT = "_RTCRtpSender__rtt"
_SENDER_STATS = "_RTCRtpSender__stats"

# codec, frame, whether frames were lost just before this one
FrameCallback = Callable[[RTCRtpCodecParameters, JitterFrame, bool], None]


class TapError(RuntimeError):
    """aiortc's internals are not what this tap was written for."""


@dataclass
class ReceiveCounters:
    """What the tap counts for one receiver (a Producer's): the frames reaching the Producer
    (paused or not) and their bytes, and the NACKs and PLIs sent to the publisher."""

    frames: int = 0
    bytes: int = 0
    nacks: int = 0
    plis: int = 0


# Per tapped receiver; read by the Worker's meters (media/meter.py).
_RECEIVED: weakref.WeakKeyDictionary[RTCRtpReceiver, ReceiveCounters] = weakref.WeakKeyDictionary()


def received(receiver: RTCRtpReceiver) -> ReceiveCounters | None:
    """The tap's counters of ``receiver``; None if it was never tapped."""
    return _RECEIVED.get(receiver)


class _FrameTap(queue.Queue):  # type: ignore[type-arg]
    def __init__(
        self,
        on_frame: FrameCallback,
        buffer: VideoFrameAssembler | AudioPassThrough,
        counters: ReceiveCounters,
    ):
        super().__init__()
        self._on_frame = on_frame
        self._buffer = buffer
        self._counters = counters

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            # The stop sentinel: let the (idle) decoder thread see it and exit.
            super().put(None)
            return
        codec, frame = item
        self._counters.frames += 1
        self._counters.bytes += len(frame.data)
        lost = self._buffer.discontinuity
        self._buffer.discontinuity = False
        try:
            self._on_frame(codec, frame, lost)
        except Exception:
            # Never let a forwarding bug propagate into aiortc's RTP handling.
            log.exception("frame callback failed")


def _check_version() -> None:
    if aiortc.__version__ != TESTED_AIORTC:
        raise TapError(
            f"the encoded-frame tap was written for aiortc {TESTED_AIORTC}, "
            f"found {aiortc.__version__}: re-check media/tap.py before upgrading"
        )


def install_receiver_tap(
    receiver: RTCRtpReceiver,
    on_frame: FrameCallback,
    *,
    starts_frame: Callable[[bytes], bool],
    layer_of: Callable[[bytes], FrameLayer | None] | None = None,
) -> None:
    """Route ``receiver``'s encoded frames to ``on_frame`` instead of its decoder.

    ``layer_of`` reads a frame's temporal layer off its first packet's payload (VP8): the
    frames handed on then carry it as ``.layer`` (media/jitter.py LayeredFrame).

    Must run synchronously inside the peer connection's ``track`` event: that is before
    ``receive()`` starts the decoder thread with the queue it finds then.
    """
    _check_version()
    for name in (_QUEUE, _JITTER, _THREAD):
        if not hasattr(receiver, name):
            raise TapError(f"RTCRtpReceiver has no {name}: aiortc internals changed")
    if getattr(receiver, _THREAD) is not None:
        raise TapError("the decoder thread already runs: install the tap in the track event")
    if not isinstance(getattr(receiver, _QUEUE), queue.Queue) or not isinstance(
        getattr(receiver, _JITTER), JitterBuffer
    ):
        raise TapError("RTCRtpReceiver's decoder queue or jitter buffer changed type")
    kind = receiver.track.kind if receiver.track is not None else None
    buffer: VideoFrameAssembler | AudioPassThrough
    if kind == "video":
        buffer = VideoFrameAssembler(starts_frame, layer_of=layer_of)
    elif kind == "audio":
        buffer = AudioPassThrough()
    else:
        raise TapError(f"cannot tap a receiver of kind {kind!r}")
    for name in ("_send_rtcp_nack", "_send_rtcp_pli"):
        if not callable(getattr(receiver, name, None)):
            raise TapError(f"RTCRtpReceiver has no {name}: aiortc internals changed")
    counters = _RECEIVED[receiver] = ReceiveCounters()
    setattr(receiver, _JITTER, buffer)
    setattr(receiver, _QUEUE, _FrameTap(on_frame, buffer, counters))
    # Every NACK and PLI to the publisher goes through these two, aiortc's and ours alike.
    send_nack, send_pli = receiver._send_rtcp_nack, receiver._send_rtcp_pli

    async def counted_nack(media_ssrc: int, lost: list[int]) -> None:
        counters.nacks += 1
        await send_nack(media_ssrc, lost)

    async def counted_pli(media_ssrc: int) -> None:
        counters.plis += 1
        await send_pli(media_ssrc)

    receiver._send_rtcp_nack = counted_nack  # type: ignore[method-assign]
    receiver._send_rtcp_pli = counted_pli  # type: ignore[method-assign]


def drop_unrequested_media(receiver: RTCRtpReceiver, on_drop: Callable[[], None]) -> None:
    """Drop every RTP packet ``receiver`` gets, before depacketizer, jitter buffer or decoder.

    For a receiver the Worker never asked for: aiortc starts one (and its decoder) wherever
    an answer says the participant will send. Answers are checked before aiortc sees them
    (media/answer.py); this holds should one ever get through. Must run in the ``track``
    event, before ``receive()`` registers the receiver with the transport.
    """
    _check_version()
    if not callable(getattr(receiver, "_handle_rtp_packet", None)):
        raise TapError("RTCRtpReceiver has no _handle_rtp_packet: aiortc internals changed")

    async def drop(packet: RtpPacket, arrival_time_ms: int) -> None:
        on_drop()

    receiver._handle_rtp_packet = drop  # type: ignore[method-assign]


def tolerate_close_while_connecting(pc: RTCPeerConnection) -> None:
    """Let ``pc`` be closed while it connects without a "Task exception was never retrieved".

    setRemoteDescription and setLocalDescription start connecting in a task nobody awaits,
    and that task raises (InvalidStateError: "RTCIceTransport is closed") when the
    connection is closed under it, as when a participant leaves right after answering.
    After close that is expected and dropped; anything else is logged here, when it
    happens, instead of by asyncio whenever the task is collected.
    """
    _check_version()
    connect = getattr(pc, _CONNECT, None)
    if not callable(connect):
        raise TapError(f"RTCPeerConnection has no {_CONNECT}: aiortc internals changed")

    async def connect_or_closed() -> None:
        try:
            await connect()
        except Exception:
            if pc.signalingState != "closed":
                log.exception("connecting a peer connection failed")

    setattr(pc, _CONNECT, connect_or_closed)


def take_over_bandwidth(receiver: RTCRtpReceiver) -> None:
    """Stop aiortc's own REMB for this receiver: the Worker sends its own (``send_remb``).

    aiortc's estimator (abs-send-time, no transport-cc) drives browser publishers down to a
    few hundred kbps even on loopback; a forwarder must decide what it asks for.
    """
    _check_version()
    if not hasattr(receiver, _ESTIMATOR):
        raise TapError(f"RTCRtpReceiver has no {_ESTIMATOR}: aiortc internals changed")
    setattr(receiver, _ESTIMATOR, None)


async def send_remb(receiver: RTCRtpReceiver, bitrate: int) -> bool:
    """Tell the publisher behind ``receiver`` the most it may send (REMB)."""
    rtcp_ssrc = getattr(receiver, _RTCP_SSRC, None)
    ssrcs = [s.source for s in receiver.getSynchronizationSources()]
    if rtcp_ssrc is None or not ssrcs:
        return False
    packet = RtcpPsfbPacket(
        fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(bitrate, ssrcs)
    )
    await receiver._send_rtcp(packet)
    return True


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` when the remote peer asks ``sender`` for a keyframe (PLI or FIR).

    aiortc only sets a flag for its own encoder, which forwarding never runs.
    """
    _check_version()
    if not callable(getattr(sender, "_send_keyframe", None)):
        raise TapError("RTCRtpSender has no _send_keyframe: aiortc internals changed")
    sender._send_keyframe = callback  # type: ignore[method-assign]


def on_link_report(sender: RTCRtpSender, callback: Callable[[LinkReport], None]) -> None:
    """Call ``callback`` with what the subscriber reports about ``sender``'s stream: each
    receiver report block (loss fraction, jitter, aiortc's round-trip estimate) and each
    REMB naming it. aiortc handles these first (its RTT, stats and NACK retransmission from
    the sender's own history go on as before); the callback only reads.
    """
    _check_version()
    handle = getattr(sender, "_handle_rtcp_packet", None)
    if not callable(handle) or not hasattr(sender, _SENDER_RTT):
        raise TapError("RTCRtpSender has no _handle_rtcp_packet: aiortc internals changed")
    clock_rate = CLOCK_RATE_OF.get(sender.kind, 90000)

    async def reported(packet: AnyRtcpPacket) -> None:
        await handle(packet)
        try:
            if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                for block in packet.reports:
                    if block.ssrc != sender._ssrc:
                        continue
                    rtt = getattr(sender, _SENDER_RTT)
                    callback(
                        LinkReport(
                            fraction_lost=block.fraction_lost / 256,
                            jitter_s=block.jitter / clock_rate,
                            round_trip_s=float(rtt) if rtt is not None else None,
                        )
                    )
            elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
                if sender._ssrc in ssrcs:
                    callback(LinkReport(remb_bps=bitrate))
        except ValueError:
            pass  # not a REMB (another application-layer feedback)
        except Exception:
            # Never let a rate decision break aiortc's RTCP handling.
            log.exception("link report callback failed")

    sender._handle_rtcp_packet = reported  # type: ignore[method-assign]


def simulate_receive_loss(receiver: RTCRtpReceiver, fraction: float, seed: int = 1) -> None:
    """Drop ``fraction`` of the RTP packets ``receiver`` gets before aiortc sees them, as a
    lossy link would (for test bots: this kernel has no netem). aiortc's statistics, NACKs
    and receiver reports then see the loss as they would a real one. Before ``receive()``.
    """
    import random

    _check_version()
    handle = getattr(receiver, "_handle_rtp_packet", None)
    if not callable(handle):
        raise TapError("RTCRtpReceiver has no _handle_rtp_packet: aiortc internals changed")
    rng = random.Random(seed)

    async def lossy(packet: RtpPacket, arrival_time_ms: int) -> None:
        if rng.random() >= fraction:
            await handle(packet, arrival_time_ms)

    receiver._handle_rtp_packet = lossy  # type: ignore[method-assign]


_NTP_OFFSET_S = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)


def _fast_ntp_time() -> int:
    now = time.time() + _NTP_OFFSET_S
    seconds = int(now)
    return (seconds << 32) | int((now - seconds) * (1 << 32))


def use_fast_clock() -> None:
    """Replace aiortc's NTP clock, which goes through ``datetime`` for every RTP packet sent
    (the abs-send-time header): 6 % of the Worker's CPU in the benchmark's profile. Same
    values, process-wide."""
    _check_version()
    aiortc.clock.current_ntp_time = _fast_ntp_time


async def request_keyframe(receiver: RTCRtpReceiver) -> bool:
    """Send a PLI upstream for every SSRC ``receiver`` has heard from recently."""
    sources = receiver.getSynchronizationSources()
    for source in sources:
        await receiver._send_rtcp_pli(source.source)
    return bool(sources)


# ---------------------------------------------------------------- counters for the meters


@dataclass(frozen=True)
class InboundPackets:
    """RTP packets one receiver has had: ``packets`` all of them (retransmissions included);
    ``media_packets`` and ``lost`` on the media SSRCs only (RFC 3550's cumulative loss)."""

    packets: int = 0
    media_packets: int = 0
    lost: int = 0


def inbound_packets(receiver: RTCRtpReceiver) -> InboundPackets:
    streams = getattr(receiver, _REMOTE_STREAMS, None)
    rtx = getattr(receiver, _RTX_SSRC, None)
    if not isinstance(streams, dict) or not isinstance(rtx, dict):
        raise TapError("RTCRtpReceiver's stream statistics changed: aiortc internals changed")
    packets = media = lost = 0
    for ssrc, stream in list(streams.items()):
        packets += stream.packets_received
        if ssrc not in rtx:
            media += stream.packets_received
            lost += max(0, stream.packets_lost)
    return InboundPackets(packets, media, lost)


@dataclass(frozen=True)
class OutboundReport:
    """What one sender has sent (packets, payload bytes) and what its subscriber's last
    receiver report said: packets lost (cumulative) and the round trip aiortc derived."""

    packets: int = 0
    bytes: int = 0
    packets_lost: int | None = None
    round_trip_s: float | None = None


def outbound_report(sender: RTCRtpSender) -> OutboundReport:
    """The one place the Worker reads what a sender sent: aiortc's own sender counts it (the
    same numbers its sender reports carry)."""
    for name in (_SENT_PACKETS, _SENT_OCTETS, _SENDER_RTT, _SENDER_STATS):
        if not hasattr(sender, name):
            raise TapError(f"RTCRtpSender has no {name}: aiortc internals changed")
    lost: int | None = None
    for stats in list(getattr(sender, _SENDER_STATS).values()):
        if getattr(stats, "type", None) == "remote-inbound-rtp":
            lost = max(0, int(stats.packetsLost))
    rtt = getattr(sender, _SENDER_RTT)
    return OutboundReport(
        packets=int(getattr(sender, _SENT_PACKETS)),
        bytes=int(getattr(sender, _SENT_OCTETS)),
        packets_lost=lost,
        round_trip_s=float(rtt) if rtt is not None else None,
    )


@dataclass
class Feedback:
    """RTCP feedback subscribers sent on one connection, by kind of the stream it is about."""

    nacks: dict[str, int] = field(default_factory=dict)
    plis: dict[str, int] = field(default_factory=dict)  # PLI and FIR


_FEEDBACK: weakref.WeakKeyDictionary[RTCDtlsTransport, Feedback] = weakref.WeakKeyDictionary()


def count_feedback(transport: RTCDtlsTransport) -> Feedback:
    """Count the NACKs and keyframe requests that reach ``transport``'s senders (idempotent).

    Counted where aiortc routes RTCP to its recipients, so whoever handles a sender's
    feedback (aiortc, or a sender of our own), every packet is counted once.
    """
    feedback = _FEEDBACK.get(transport)
    if feedback is not None:
        return feedback
    router = getattr(transport, "_rtp_router", None)
    if router is None or not callable(getattr(router, "route_rtcp", None)):
        raise TapError("RTCDtlsTransport has no _rtp_router: aiortc internals changed")
    feedback = _FEEDBACK[transport] = Feedback()
    route = router.route_rtcp

    def counted(packet: AnyRtcpPacket) -> Any:
        recipients = route(packet)
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            counts = feedback.nacks
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            counts = feedback.plis
        else:
            return recipients
        for recipient in recipients:
            if isinstance(recipient, RTCRtpSender):
                counts[recipient.kind] = counts.get(recipient.kind, 0) + 1
        return recipients

    router.route_rtcp = counted
    return feedback
