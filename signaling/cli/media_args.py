"""The media options, shared by ``serve`` (whose in-process Worker uses them) and ``worker``."""

from __future__ import annotations

import argparse
import ipaddress
import os

from media.config import IceAddress, IceServer, MediaConfig
from signaling.keys import weakness

_ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")
TURN_SECRET_ENV = "TELECONSULT_TURN_SECRET"


class UsageError(Exception):
    """A bad argument; the message is shown as is and must not echo a name or an id."""


def add(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ice-address",
        action="append",
        default=[],
        metavar="IP[=ANNOUNCED]",
        help="address for media (repeatable); IP=ANNOUNCED behind 1:1 NAT. Default 127.0.0.1",
    )
    p.add_argument(
        "--ice-server",
        action="append",
        default=[],
        metavar="URL",
        help="STUN/TURN server given to the media worker and to clients (repeatable)",
    )
    p.add_argument(
        "--turn-secret",
        metavar="SECRET",
        help="coturn's static-auth-secret (use-auth-secret): every participant gets TURN "
        f"credentials of its own, valid 12 h (default: ${TURN_SECRET_ENV})",
    )
    p.add_argument(
        "--turn-for-observers",
        action="store_true",
        help="give receive-only participants (observers) TURN credentials too, for networks "
        "that block UDP (default: publishers only)",
    )
    p.add_argument(
        "--ice-username", help="static username for the turn: servers (media worker only)"
    )
    p.add_argument(
        "--ice-credential", help="static credential for the turn: servers (media worker only)"
    )
    p.add_argument(
        "--udp-ports",
        metavar="LOW-HIGH",
        help="UDP ports the media Worker's ICE sockets take, for a firewall (default: any); "
        "one port per participant and address",
    )
    p.add_argument(
        "--video-codec",
        choices=["VP8", "H264"],
        default="VP8",
        help="a consultation's video codec when its first participant can use it, "
        "else one they can",
    )
    p.add_argument(
        "--max-video-kbps",
        type=int,
        default=MediaConfig.max_video_bitrate // 1000,
        metavar="KBPS",
        help="the most each video publisher is asked to send (default: %(default)s)",
    )


def config(args: argparse.Namespace) -> MediaConfig:
    if args.max_video_kbps < 100:
        raise UsageError("--max-video-kbps must be at least 100")
    turn_secret = _turn_secret(args.turn_secret)
    return MediaConfig(
        ice_addresses=_ice_addresses(args.ice_address) or MediaConfig().ice_addresses,
        ice_servers=_ice_servers(
            args.ice_server, args.ice_username, args.ice_credential, turn_secret is not None
        ),
        turn_secret=turn_secret,
        turn_for_observers=args.turn_for_observers,
        video_codec=args.video_codec,
        max_video_bitrate=args.max_video_kbps * 1000,
        udp_ports=_udp_ports(args.udp_ports),
    )


def _udp_ports(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    low, sep, high = text.partition("-")
    try:
        ports = (int(low), int(high if sep else low))
    except ValueError:
        raise UsageError("--udp-ports takes LOW-HIGH, e.g. 40000-49999") from None
    if not 1024 <= ports[0] <= ports[1] <= 65535:
        raise UsageError("--udp-ports must be within 1024-65535, low to high")
    return ports


def _ice_addresses(values: list[str]) -> tuple[IceAddress, ...]:
    out = []
    for text in values:
        try:
            address = IceAddress.parse(text)
            for ip in (address.listen, address.announced):
                if ip is not None:
                    ipaddress.ip_address(ip)
        except ValueError:
            raise UsageError(
                f"--ice-address {text!r}: expected IP or LISTEN_IP=ANNOUNCED_IP"
            ) from None
        out.append(address)
    return tuple(out)


def _ice_servers(
    urls: list[str], username: str | None, credential: str | None, rest: bool
) -> tuple[IceServer, ...]:
    if (username is None) != (credential is None):
        raise UsageError("--ice-username and --ice-credential go together")
    servers = []
    for url in urls:
        if not url.startswith(_ICE_SCHEMES):
            # Not echoed: a TURN URL may carry credentials.
            raise UsageError("each --ice-server must start with stun:, stuns:, turn: or turns:")
        if url.startswith(("turn:", "turns:")):
            if username is None and not rest:
                raise UsageError(
                    "a turn: server needs --turn-secret (credentials per participant), or "
                    "--ice-username and --ice-credential (for the media worker only)"
                )
            servers.append(IceServer(urls=(url,), username=username, credential=credential))
        else:
            servers.append(IceServer(urls=(url,)))
    if (username is not None or rest) and not any(s.urls[0].startswith("turn") for s in servers):
        raise UsageError("TURN credentials given but no turn: --ice-server")
    return tuple(servers)


def _turn_secret(value: str | None) -> bytes | None:
    """``--turn-secret``, else $TELECONSULT_TURN_SECRET: coturn's static-auth-secret."""
    value = value if value is not None else os.environ.get(TURN_SECRET_ENV)
    if value is None:
        return None
    problem = weakness(value.strip())
    if problem is not None:
        raise UsageError(f"the TURN secret {problem}")
    return value.strip().encode()


