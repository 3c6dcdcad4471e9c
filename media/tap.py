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
from collections.abc import Callable
from typing import Any

import aiortc
import aiortc.clock
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

from media.jitter import AudioPassThrough, VideoFrameAssembler

log = logging.getLogger(__name__)

TESTED_AIORTC = "1.16.0"

_QUEUE = "_RTCRtpReceiver__decoder_queue"
_JITTER = "_RTCRtpReceiver__jitter_buffer"
_THREAD = "_RTCRtpReceiver__decoder_thread"
_ESTIMATOR = "_RTCRtpReceiver__remote_bitrate_estimator"
_RTCP_SSRC = "_RTCRtpReceiver__rtcp_ssrc"

# codec, frame, whether frames were lost just before this one
FrameCallback = Callable[[RTCRtpCodecParameters, JitterFrame, bool], None]


class TapError(RuntimeError):
    """aiortc's internals are not what this tap was written for."""


class _FrameTap(queue.Queue):  # type: ignore[type-arg]
    def __init__(self, on_frame: FrameCallback, buffer: VideoFrameAssembler | AudioPassThrough):
        super().__init__()
        self._on_frame = on_frame
        self._buffer = buffer

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            # The stop sentinel: let the (idle) decoder thread see it and exit.
            super().put(None)
            return
        codec, frame = item
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
) -> None:
    """Route ``receiver``'s encoded frames to ``on_frame`` instead of its decoder.

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
        buffer = VideoFrameAssembler(starts_frame)
    elif kind == "audio":
        buffer = AudioPassThrough()
    else:
        raise TapError(f"cannot tap a receiver of kind {kind!r}")
    setattr(receiver, _JITTER, buffer)
    setattr(receiver, _QUEUE, _FrameTap(on_frame, buffer))


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
