"""What a media Worker is told at start-up: where it listens for ICE, what it announces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

VideoCodec = Literal["VP8", "H264"]


@dataclass(frozen=True)
class IceAddress:
    """An address the Worker gathers host candidates on, and the one it announces.

    ``announced`` is for a Worker behind 1:1 NAT (mediasoup's ``announcedIp``): the socket
    binds ``listen`` but clients are told to reach ``announced``.
    """

    listen: str
    announced: str | None = None

    @classmethod
    def parse(cls, text: str) -> IceAddress:
        """``"10.0.0.5"`` or ``"10.0.0.5=203.0.113.7"`` (listen=announced)."""
        listen, sep, announced = text.partition("=")
        if not listen or (sep and not announced):
            raise ValueError(f"bad ICE address {text!r}: expected IP or LISTEN=ANNOUNCED")
        return cls(listen=listen.strip(), announced=announced.strip() or None)


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server, used by the Worker and handed to clients as is."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class MediaConfig:
    # 127.0.0.1 by default so a local demo works out of the box (aioice skips loopback).
    ice_addresses: tuple[IceAddress, ...] = (IceAddress("127.0.0.1"),)
    # No public STUN server unless configured: aiortc would otherwise use Google's.
    ice_servers: tuple[IceServer, ...] = ()
    # One codec on every leg, so a Consumer can forward a Producer's frames unchanged.
    video_codec: VideoCodec = "VP8"
    # The most a video publisher is asked to send (REMB, refreshed every second): enough
    # for 720p of a wound or an X-ray held to the camera, little enough for a county link.
    max_video_bitrate: int = 1_500_000
    # Shortest interval between two keyframe requests (PLI) sent to one Producer.
    keyframe_interval_s: float = 0.3
    # How long a participant may take to answer an offer before it is dropped.
    answer_timeout_s: float = 15.0
