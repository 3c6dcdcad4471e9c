"""The aiohttp application factory and the process entry point."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref

from aiohttp import web

from media.worker import Worker
from recordings.store import RecordingStore
from rooms.memory import InMemoryRoomStore
from rooms.store import RoomStore
from signaling import appkeys
from signaling.api import RecordingsApi
from signaling.audit import AuditLog
from signaling.config import ServerConfig
from signaling.hub import Hub
from signaling.pages import setup_pages
from signaling.protocol import MAX_MESSAGE_BYTES
from signaling.server import Server
from signaling.tls import ssl_context
from signaling.ws import ClientConnection

log = logging.getLogger(__name__)

SERVER: web.AppKey[Server] = web.AppKey("server", Server)
WS_FRAME_LIMIT = 16 * MAX_MESSAGE_BYTES
_SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets")


def create_app(config: ServerConfig, *, store: RoomStore | None = None) -> web.Application:
    app = web.Application(client_max_size=256 * 1024)
    hub = Hub()
    server = Server(
        config=config,
        store=store if store is not None else InMemoryRoomStore(),
        hub=hub,
        worker=Worker(config.media, hub),
        audit=AuditLog(config.data_dir / "audit.log"),
        recording_store=RecordingStore(config.data_dir),
    )
    app[appkeys.CONFIG] = config
    app[SERVER] = server
    app[_SOCKETS] = weakref.WeakSet()
    RecordingsApi(server.recording_store, config.secret, server.audit).setup(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/ws", websocket)
    setup_pages(app)
    app.on_shutdown.append(_close_sockets)
    app.on_cleanup.append(_close_worker)
    return app


async def healthz(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    return web.json_response({"status": "ok", "worker": server.worker.stats()})


async def websocket(request: web.Request) -> web.WebSocketResponse:
    # aiohttp closes the socket on a frame over max_msg_size; the protocol's own, lower
    # limit answers too_large and keeps the socket. Only absurd frames are cut.
    ws = web.WebSocketResponse(max_msg_size=WS_FRAME_LIMIT, heartbeat=30.0)
    await ws.prepare(request)
    request.app[_SOCKETS].add(ws)
    await ClientConnection(request.app[SERVER], ws).run()
    return ws


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[_SOCKETS]):
        with contextlib.suppress(Exception):
            await ws.close(code=1001, message=b"server shutting down")


async def _close_worker(app: web.Application) -> None:
    await app[SERVER].worker.close()


class _NoTokenAccessLogger(web.AccessLogger):
    """Join URLs (and API URLs for <video>) carry the token: log them without it."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if request.path.startswith("/join/"):
            request = request.clone(rel_url="/join/<token>")
        elif "token" in request.query:
            request = request.clone(rel_url=request.path)
        super().log(request, response, time)


def run(config: ServerConfig) -> None:
    app = create_app(config)
    ssl = (
        ssl_context(config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key else None
    )
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        web.run_app(
            app,
            host=config.host,
            port=config.port,
            ssl_context=ssl,
            access_log_class=_NoTokenAccessLogger,
            print=None,
        )
