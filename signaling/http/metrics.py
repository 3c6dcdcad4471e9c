"""``GET /metrics``: the Prometheus text format, for operators only.

It says how many calls run and how busy every Worker is, which nobody outside the operation
needs to know. Without a token configured it answers loopback only (a Prometheus on the
same machine, or ``curl`` there); with ``$TELECONSULT_METRICS_TOKEN`` set, every scrape must
bear it (``Authorization: Bearer ...``), loopback included: a reverse proxy on the same
machine makes every visitor a loopback client. The address is the TCP peer's, never a
forwarded-for header.
"""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from signaling.http import appkeys
from signaling.metrics import NodeMetrics

METRICS: web.AppKey[NodeMetrics] = web.AppKey("metrics", NodeMetrics)


def is_loopback(request: web.Request) -> bool:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer[0])
    except (ValueError, TypeError, IndexError):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def bears(request: web.Request, token: str) -> bool:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode(), token.encode()
    )


async def metrics(request: web.Request) -> web.Response:
    token = request.app[appkeys.CONFIG].metrics_token
    if token is not None:
        if not bears(request, token):
            raise web.HTTPUnauthorized(
                text="a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
    elif not is_loopback(request):
        raise web.HTTPForbidden(
            text="metrics are served to loopback only; set TELECONSULT_METRICS_TOKEN to "
            "scrape over the network"
        )
    body = await request.app[METRICS].exposition()
    return web.Response(
        body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"}
    )


def setup(app: web.Application, node_metrics: NodeMetrics) -> None:
    app[METRICS] = node_metrics
    app.router.add_get("/metrics", metrics)
