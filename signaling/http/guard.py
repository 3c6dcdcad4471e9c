"""The connection guard: what a client must do, and how soon, before it may hold a socket.

aiohttp (3.x) puts no deadline on a request whose headers never finish: only its keep-alive
timer, 75 s under ``run_app``, ever closed one, so a few hundred half-open requests a minute
kept file descriptors exhausted and legitimate joins failed. The guard adds:

- a deadline for the first request's headers (and for TLS handshakes);
- a deadline for request bodies (``guard_middleware``, which reads the body first);
- a cap per client address (an IPv6 /64) on connections that are still unauthenticated:
  no complete request yet, or a WebSocket upgraded but not yet joined. Beyond it new
  connections from that address are closed at once, so one address cannot crowd out others;
- a soft RLIMIT_NOFILE raised to the hard limit at start-up (``raise_open_files_limit``).

A connection that has made a request is bounded by the keep-alive timeout after it, and an
upgraded WebSocket by its join deadline (signaling/room/connection.py) until it joins.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

_WARN_EVERY_S = 60.0
_NR_OPEN = Path("/proc/sys/fs/nr_open")


@dataclass(frozen=True)
class GuardLimits:
    # A browser sends its request headers in one packet: 10 s is a very bad mobile link.
    header_timeout_s: float = 10.0
    # The largest body accepted (256 KiB, the app's client_max_size) at ~100 kbit/s.
    body_timeout_s: float = 30.0
    # Browsers open a handful of connections per page; a clinic behind one NAT address
    # opens a few per person joining at that moment.
    max_unauthenticated_per_address: int = 32
    # Idle keep-alive connections (and a second request's headers) get this long: pages
    # load once and the call runs over its WebSocket, so longer buys nothing.
    keepalive_timeout_s: float = 15.0


@dataclass(eq=False)
class _Connection:
    address: str
    transport: asyncio.Transport
    # Armed until the first request's headers are complete.
    header_timer: asyncio.TimerHandle | None = None
    # A WebSocket waiting for its join: tells whether it has joined since.
    joined: Callable[[], bool] | None = None


class ConnectionGuard:
    def __init__(self, limits: GuardLimits) -> None:
        self.limits = limits
        # Only unauthenticated connections are held here; any other costs nothing.
        self._connections: dict[RequestHandler, _Connection] = {}
        self._by_address: dict[str, set[RequestHandler]] = {}
        self._warned_at: dict[str, float] = {}

    def attach(self, server: web.Server) -> None:
        """Hear of every connection ``server`` (an AppRunner's) accepts and loses.

        aiohttp offers no hook for this; its RequestHandler reports each connection to the
        Server's ``connection_made``/``connection_lost``, so those two are wrapped on this
        one instance.
        """
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self._opened(handler, transport)

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            self._forget(handler)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    def unauthenticated(self, address: str) -> int:
        handlers = self._by_address.get(address, set())
        for handler in [h for h in handlers if self._has_joined(h)]:
            self._forget(handler)
        return len(self._by_address.get(address, ()))

    # ------------------------------------------------------------ events

    def _opened(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        address = client_address(transport.get_extra_info("peername"))
        if address is None:
            return  # not TCP: nothing to count by
        if self.unauthenticated(address) >= self.limits.max_unauthenticated_per_address:
            self._warn(address)
            transport.close()
            return
        connection = _Connection(address, transport)
        connection.header_timer = asyncio.get_running_loop().call_later(
            self.limits.header_timeout_s, self._expire, handler
        )
        self._connections[handler] = connection
        self._by_address.setdefault(address, set()).add(handler)

    def request_started(self, request: web.BaseRequest) -> None:
        """A request's headers are complete: the connection has proved it is a client."""
        connection = self._connections.get(request.protocol)
        if connection is None:
            return
        if connection.header_timer is not None:
            connection.header_timer.cancel()
            connection.header_timer = None
        # An upgrade is not a request served: it stays counted until it joins.
        if request.headers.get("Upgrade", "").lower() != "websocket":
            self._forget(request.protocol)

    def joining(self, request: web.BaseRequest, joined: Callable[[], bool]) -> None:
        """An upgraded WebSocket counts as unauthenticated until ``joined()`` says otherwise."""
        connection = self._connections.get(request.protocol)
        if connection is not None:
            connection.joined = joined

    def _expire(self, handler: RequestHandler) -> None:
        connection = self._connections.get(handler)
        if connection is None or connection.header_timer is None:
            return
        log.debug("closing a connection from %s: no request headers in time", connection.address)
        connection.transport.close()
        self._forget(handler)

    def _forget(self, handler: RequestHandler) -> None:
        connection = self._connections.pop(handler, None)
        if connection is None:
            return
        if connection.header_timer is not None:
            connection.header_timer.cancel()
        handlers = self._by_address.get(connection.address)
        if handlers is not None:
            handlers.discard(handler)
            if not handlers:
                del self._by_address[connection.address]

    def _has_joined(self, handler: RequestHandler) -> bool:
        connection = self._connections.get(handler)
        return connection is not None and connection.joined is not None and connection.joined()

    def _warn(self, address: str) -> None:
        # Once a minute per address: a flood of refusals must not become a flood of lines.
        now = time.monotonic()
        if now - self._warned_at.get(address, -_WARN_EVERY_S) < _WARN_EVERY_S:
            return
        if len(self._warned_at) > 4096:
            self._warned_at.clear()
        self._warned_at[address] = now
        log.warning(
            "refusing connections from %s: %d unauthenticated connections already open",
            address,
            self.limits.max_unauthenticated_per_address,
        )


GUARD: web.AppKey[ConnectionGuard] = web.AppKey("guard", ConnectionGuard)


@web.middleware
async def guard_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    guard = request.app[GUARD]
    guard.request_started(request)
    if request.body_exists:
        # Read here, under a deadline, so no handler ever waits on a client's body; the
        # handler's own read() then returns what was read.
        try:
            async with asyncio.timeout(guard.limits.body_timeout_s):
                await request.read()
        except TimeoutError:
            response = web.HTTPRequestTimeout(text="the request body did not arrive in time")
            response.force_close()
            raise response from None
    return await handler(request)


def client_address(peername: Any) -> str | None:
    """What the cap counts by: the IP, or the /64 of an IPv6 address (one subscriber's)."""
    if not isinstance(peername, tuple) or not peername:
        return None
    try:
        ip = ipaddress.ip_address(peername[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class GuardedSite(web.BaseSite):
    """aiohttp's TCPSite, with the TLS handshake held to the header deadline (asyncio's
    default is 60 s, and a connection is only seen by the guard once it is through)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        limits: GuardLimits,
        ssl_context: Any = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host, self._port, self._limits = host, port, limits

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        handshake = self._limits.header_timeout_s if self._ssl_context is not None else None
        self._server = await asyncio.get_running_loop().create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=handshake,
        )


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force.

    The usual soft default (1024) is a few hundred participants' sockets; the hard limit is
    what the administrator allows, and the guard, not a low soft limit, keeps anyone from
    using it all.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        # An unlimited hard limit still stops at the kernel's nr_open.
        try:
            target = int(_NR_OPEN.read_text())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit from %d to %d: %s", soft, target, exc)
    log.info(
        "open files limit: %d (hard limit %s)",
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
    )
    return soft
