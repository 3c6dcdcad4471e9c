"""ICE addresses and servers: what the Worker gathers on, announces and hands out."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import random
import re
import types
from typing import Any

import aioice.ice
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer

from media.config import IceAddress, IceServer, MediaConfig
from media.turn import ice_servers_for


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
        iceServers=[
            _rtc_ice_server(s) for s in ice_servers_for(config, "worker", client=False)
        ],
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


class _PortRangeLoop:
    """The running loop, but UDP sockets asked for on port 0 get a port from a range."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ports: tuple[int, int]) -> None:
        self._loop = loop
        self._ports = ports

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_datagram_endpoint(
        self, factory: Any, local_addr: tuple[str, int] | None = None, **kwargs: Any
    ) -> Any:
        if local_addr is None or local_addr[1] != 0:
            return await self._loop.create_datagram_endpoint(
                factory, local_addr=local_addr, **kwargs
            )
        low, high = self._ports
        span = high - low + 1
        # From a random place: sessions opened together do not all race for the same port.
        start = random.randrange(span)
        for i in range(span):
            port = low + (start + i) % span
            try:
                return await self._loop.create_datagram_endpoint(
                    factory, local_addr=(local_addr[0], port), **kwargs
                )
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE, f"no free UDP port in {low}-{high}")


def restrict_ports(ports: tuple[int, int] | None) -> None:
    """The UDP ports the Worker's ICE sockets bind (for a firewall that opens a range).

    aioice binds port 0 (any) with no setting for it; as for the host addresses, the one way
    in is process-wide: its module sees a running loop whose datagram endpoints on port 0
    come from the range. None restores the default.
    """
    if ports is None:
        aioice.ice.asyncio = asyncio
        return
    low, high = ports
    if not 1024 <= low <= high <= 65535:
        raise ValueError("the UDP port range must be within 1024-65535, low to high")
    shim = types.ModuleType("asyncio")
    shim.__dict__.update(asyncio.__dict__)
    shim.get_running_loop = lambda: _PortRangeLoop(asyncio.get_running_loop(), (low, high))  # type: ignore[attr-defined]
    aioice.ice.asyncio = shim  # type: ignore[attr-defined]
