"""What a media Worker is told at start-up: where it listens for ICE, what it announces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

VideoCodec = Literal["VP8", "H264"]
# Every video codec the Worker can forward, in the order it picks one for a room.
VIDEO_CODECS: tuple[VideoCodec, ...] = ("VP8", "H264")


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
    # One codec on every leg of a room, so a Consumer can forward a Producer's frames
    # unchanged: this one, unless the room's first participant cannot use it.
    video_codec: VideoCodec = "VP8"
    # The most a video publisher is asked to send (REMB, refreshed every second): enough
    # for 720p of a wound or an X-ray held to the camera, little enough for a county link.
    max_video_bitrate: int = 1_500_000
    # Shortest interval between two keyframe requests (PLI) sent to one Producer.
    keyframe_interval_s: float = 0.3
    # How long a participant may take to answer an offer before it is dropped.
    answer_timeout_s: float = 15.0
    # The UDP ports the Worker's ICE sockets take (low, high), for a firewall; None: any.
    udp_ports: tuple[int, int] | None = None
    # coturn's use-auth-secret: every peer gets TURN credentials of its own (media/turn.py).
    turn_secret: bytes | None = field(default=None, repr=False)
    # Long enough for a half-day clinic session (coturn refuses to refresh an allocation once
    # its username's expiry has passed), short enough that a leaked one goes stale.
    turn_credential_ttl_s: int = 12 * 3600
    # Whether receive-only participants (observers) get a TURN credential too. Off: a
    # Worker with a reachable address needs no relay to send to a peer behind NAT (the
    # peer's own checks open the path), observers are the most numerous and least known
    # participants (students, family), and each credential is a relay on the hospital's
    # bandwidth for 12 h. On for sites whose networks block UDP outright.
    turn_for_observers: bool = False
    # How often the Worker samples each participant's call quality (media/quality.py): often
    # enough to show a bad minute, seldom enough that an hour is a few hundred rows.
    quality_interval_s: float = 5.0
