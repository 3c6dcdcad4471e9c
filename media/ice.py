"""ICE addresses and servers: what the Worker gathers on, announces and hands out."""

from __future__ import annotations

import ipaddress
import re

import aioice.ice
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer

from media.config import IceAddress, IceServer, MediaConfig


def restrict_host_addresses(addresses: tuple[IceAddress, ...]) -> None:
    """Gather host candidates on exactly these addresses (127.0.0.1 included).

    aioice gathers on every interface but loopback, and has no per-connection setting, so
    this is process-wide: one media Worker is one process.
    """
    listen = [a.listen for a in addresses]
    for address in listen:
        ipaddress.ip_address(address)  # raises ValueError on a typo

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            a
            for a in listen
            if (use_ipv4 and ipaddress.ip_address(a).version == 4)
            or (use_ipv6 and ipaddress.ip_address(a).version == 6)
        ]

    aioice.ice.get_host_addresses = get_host_addresses


def rtc_configuration(config: MediaConfig) -> RTCConfiguration:
    # An explicit empty list: given None, aiortc falls back to a public STUN server.
    # max-bundle: under aiortc's default (balanced) policy, a transceiver added before the
    # first answer lands keeps a transport that bundling then closes, and never sends.
    return RTCConfiguration(
        iceServers=[_rtc_ice_server(s) for s in config.ice_servers],
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
    )


def _rtc_ice_server(server: IceServer) -> RTCIceServer:
    return RTCIceServer(
        urls=list(server.urls), username=server.username, credential=server.credential
    )


_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host.*)$")


def announce(sdp: str, addresses: tuple[IceAddress, ...]) -> str:
    """Rewrite host candidates on a listen address to its announced address (1:1 NAT)."""
    mapping = {a.listen: a.announced for a in addresses if a.announced}
    if not mapping:
        return sdp
    lines = []
    for line in sdp.split("\r\n"):
        match = _CANDIDATE.match(line)
        if match and match.group(2) in mapping:
            line = match.group(1) + mapping[match.group(2)] + match.group(3)
        elif line.startswith("c=IN IP4 ") and line[9:] in mapping:
            line = "c=IN IP4 " + mapping[line[9:]]
        lines.append(line)
    return "\r\n".join(lines)
