"""An ExtraLine: the m-line of one extra video Producer (a screen share, a second camera).

Such Producers come and go while the session lives. aiortc cannot remove an m-line and
fires its ``track`` event once per transceiver, so a line outlives its Producers: idle
(inactive) between them, reused by the next, its receiver tapped once and forwarding to
whichever Producer it carries now.
"""

from __future__ import annotations

from aiortc import RTCRtpTransceiver
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from media.client import ExtraSource
from media.producer import Producer


class ExtraLine:
    def __init__(self, transceiver: RTCRtpTransceiver) -> None:
        self.transceiver = transceiver
        # What the participant is asked to send on it; None: idle.
        self.source: ExtraSource | None = None
        self.producer: Producer | None = None
        # Whether its receiver's frames reach on_frame (from its first track event on).
        self.tapped = False

    def on_frame(self, codec: RTCRtpCodecParameters, frame: JitterFrame, lost: bool) -> None:
        """From the tap: one call more than a main Producer's frames take, and only here.
        Frames of an idle line (a client still sending after it stopped) go nowhere."""
        producer = self.producer
        if producer is not None:
            producer.on_frame(codec, frame, lost)
