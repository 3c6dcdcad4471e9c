"""The aiohttp application factory and the process entry point."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import weakref
from typing import Literal

import redis.asyncio as aioredis
from aiohttp import web
from pydantic import BaseModel

from media.bus import RedisWorkerClient
from media.client import WorkerClient, WorkerStats
from media.local import LocalWorkerClient
from recordings.room_recorder import RoomRecorder
from recordings.store import RecordingStore
from rooms.memory import InMemoryRoomStore
from rooms.records.database import Database
from rooms.records.quality import CallQuality
from rooms.records.revocations import Revocations
from rooms.redis_store import RedisRoomStore
from rooms.store import RoomStore
from signaling.audit.log import AuditLog
from signaling.config import ServerConfig
from signaling.console import terminals as console_terminals
from signaling.console import ward_api
from signaling.console.cipher import KeystoreCipher
from signaling.console.clinic import CLINIC
from signaling.console.frontdesk import setup_frontdesk
from signaling.events import EventStream, RecordingReady
from signaling.http import appkeys, openapi
from signaling.http import metrics as metrics_http
from signaling.http.composing import Composers
from signaling.http.guard import (
    GUARD,
    ConnectionGuard,
    GuardedSite,
    guard_middleware,
    raise_open_files_limit,
)
from signaling.http.logsafe import SafeAccessLogger
from signaling.http.openapi import Operation
from signaling.http.pages import setup_pages
from signaling.http.recordings_api import RecordingsApi
from signaling.http.tls import ssl_context
from signaling.metrics import JoinTimes, NodeMetrics
from signaling.protocol import MAX_MESSAGE_BYTES
from signaling.quality import QualityLog
from signaling.room.connection import ClientConnection
from signaling.room.revocation import RevocationGuard
from signaling.room.rooms import Rooms
from signaling.server import Server
from signaling.sharing import api as sharing_api
from signaling.sharing.store import Sharing
from signaling.terminal import api as terminal_api
from signaling.terminal.service import TerminalService
from signaling.webhooks.sender import Webhooks
from signaling.workers import WorkerPool

log = logging.getLogger(__name__)

SERVER: web.AppKey[Server] = web.AppKey("server", Server)
# Frames between the protocol's limit and this get too_large and the socket lives; larger
# ones are cut by aiohttp before it spends time unmasking and decoding them.
WS_FRAME_LIMIT = 2 * MAX_MESSAGE_BYTES
_SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets")
QUALITY: web.AppKey[QualityLog] = web.AppKey("quality", QualityLog)
HSTS = "max-age=31536000"
# How long a shutdown waits for requests in flight (web.run_app's default).
_SHUTDOWN_TIMEOUT_S = 60.0


def create_app(config: ServerConfig, *, store: RoomStore | None = None) -> web.Application:
    app = web.Application(client_max_size=256 * 1024, middlewares=[guard_middleware])
    redis = aioredis.Redis.from_url(config.redis_url) if config.redis_url else None
    if store is not None:
        room_store = store
    elif config.redis_url:
        room_store = RedisRoomStore.from_url(config.redis_url)
    else:
        room_store = InMemoryRoomStore()
    audit = AuditLog.open(config.data_dir)
    database = Database.for_data_dir(config.data_dir, config.database_url)
    recording_store = RecordingStore(config.data_dir)
    # Every event carries the audit head as it stood when the event was published.
    events = EventStream(lambda: (audit.head.seq, audit.head.mac))
    # The three know each other: revocations end Rooms' members, Rooms drive the Worker,
    # the Worker's events go to Rooms. Built in that order and tied up after.
    revocation = RevocationGuard(
        Revocations(database),
        lambda consultation_id: rooms.members_of(consultation_id),
        audit,
        on_consultation_ended=room_store.end,
    )
    join_times = JoinTimes()
    quality = QualityLog(CallQuality(database))
    rooms = Rooms(
        store=room_store,
        audit=audit,
        revocation=revocation,
        media=config.media,
        resume_grace_s=config.resume_grace_s,
        events=events,
        on_joined=join_times.observe,
        quality=quality.add,
    )
    worker: WorkerClient
    if redis is not None:
        worker = RedisWorkerClient(redis, rooms)
    else:
        worker = LocalWorkerClient(
            config.media, rooms, recordings=RoomRecorder.factory(recording_store)
        )
    rooms.bind(worker)
    server = Server(
        config=config,
        store=room_store,
        rooms=rooms,
        worker=worker,
        audit=audit,
        recording_store=recording_store,
        database=database,
        revocation=revocation,
        events=events,
    )
    app[appkeys.CONFIG] = config
    app[appkeys.EVENTS] = events
    app[appkeys.REVOCATION] = server.revocation
    app[SERVER] = server
    app[QUALITY] = quality
    app[_SOCKETS] = weakref.WeakSet()
    app[GUARD] = ConnectionGuard(config.guard)
    composers = Composers(
        config.data_dir,
        config.max_composers,
        on_composed=lambda c, r: events.publish(RecordingReady(consultation=c, recording=r)),
    )
    RecordingsApi(
        server.recording_store, config.secret, server.audit, composers, server.revocation
    ).setup(app)
    if config.tls_cert is not None:
        app.on_response_prepare.append(_strict_transport_security)
    openapi.routes(app).add(
        app,
        Operation("GET", "/healthz", "Alive, and the media Worker's load", {200: Health}),
        healthz,
    )
    openapi.setup(app)
    metrics_http.setup(app, NodeMetrics(rooms, worker, join_times))
    app.router.add_get("/ws", websocket)
    setup_pages(app)
    setup_frontdesk(app, config, database, audit)
    # Nursing-home terminals: their page and endpoints, and their part of the consoles.
    terminal_api.setup(
        app,
        TerminalService(
            app[CLINIC],
            in_room=lambda cid, who: any(m.grant.identity == who for m in rooms.members_of(cid)),
        ),
    )
    console_terminals.setup(app)
    # Chat and shared images: kept with the consultation's record, sealed with its key; the
    # front desk's file workers do their CPU and disk work.
    sharing = Sharing.build(database, KeystoreCipher(recording_store.keystore), app[CLINIC].files)
    rooms.use_sharing(sharing)
    # A ward round's agenda (its routes are the front desk API's): live Rooms told of changes.
    ward_api.setup(app, rooms)
    sharing_api.setup(app, rooms, config.secret)
    app.on_startup.append(_open_records)
    if config.webhooks.endpoints:
        webhooks = Webhooks(config.webhooks, database, lambda: (audit.head.seq, audit.head.mac))
        events.subscribe(webhooks.publish)
        app[_WEBHOOKS] = webhooks
        app.on_startup.append(_open_webhooks)
    if redis is not None:
        app[_BUS] = _Bus(redis, worker, room_store)  # type: ignore[arg-type]
        app.on_startup.append(_open_bus)
        app.on_cleanup.append(_close_bus)
    app.on_shutdown.append(_close_sockets)
    app.on_cleanup.append(_close_worker)
    if config.webhooks.endpoints:
        # After the sockets and the Worker (whose teardown publishes), before the database.
        app.on_cleanup.append(_close_webhooks)
    # After the Worker (its last samples), before the records database closes.
    app.on_cleanup.append(_close_quality)
    app.on_cleanup.append(_close_records)
    app.on_cleanup.append(_close_audit)
    return app


async def _open_records(app: web.Application) -> None:
    server = app[SERVER]
    # A brand-new embedded database is created; anything behind head refuses to start.
    await server.database.ensure_current(create_embedded=True)
    await server.revocation.start()
    app[QUALITY].start()


_WEBHOOKS: web.AppKey[Webhooks] = web.AppKey("webhooks")


async def _open_webhooks(app: web.Application) -> None:
    await app[_WEBHOOKS].start()


async def _close_webhooks(app: web.Application) -> None:
    await app[_WEBHOOKS].close()


class _Bus:
    """What a node on Redis holds besides the in-process parts, to close them in order."""

    def __init__(self, redis: aioredis.Redis, worker: RedisWorkerClient, store: RoomStore) -> None:
        self.redis = redis
        self.worker = worker
        self.store = store
        self.pool: WorkerPool | None = None


_BUS: web.AppKey[_Bus] = web.AppKey("bus")


async def _open_bus(app: web.Application) -> None:
    bus, config = app[_BUS], app[appkeys.CONFIG]
    await bus.redis.ping()
    await bus.worker.start()
    if config.workers and config.redis_url:
        bus.pool = WorkerPool(config.workers, config.redis_url, config.media, config.data_dir)
        await bus.pool.start()


async def _close_bus(app: web.Application) -> None:
    bus = app[_BUS]
    if bus.pool is not None:
        await bus.pool.stop()
    await bus.worker.close()
    close = getattr(bus.store, "close", None)
    if close is not None:
        await close()
    await bus.redis.aclose()


async def _close_records(app: web.Application) -> None:
    server = app[SERVER]
    await server.revocation.stop()
    await server.database.close()


class Health(BaseModel):
    """The server answers; the Worker's counts (rooms, sessions, producers, consumers)."""

    status: Literal["ok"]
    worker: WorkerStats


async def healthz(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    stats = await server.worker.stats()
    answer = Health(status="ok", worker=stats)
    return web.Response(text=answer.model_dump_json(), content_type="application/json")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    # aiohttp closes the socket on a frame over max_msg_size; the protocol's own, lower
    # limit answers too_large and keeps the socket. No aiohttp heartbeat: it pauses while
    # data arrives, so ClientConnection keeps its own and needs to see the pongs.
    ws = web.WebSocketResponse(max_msg_size=WS_FRAME_LIMIT, autoping=False)
    await ws.prepare(request)
    request.app[_SOCKETS].add(ws)
    connection = ClientConnection(request.app[SERVER], ws, request.transport)
    request.app[GUARD].joining(request, lambda: connection.joined)
    await connection.run()
    return ws


async def _strict_transport_security(request: web.Request, response: web.StreamResponse) -> None:
    # Served over TLS: browsers must never fall back to plain HTTP for this host, where a
    # join URL (and its token) would cross the network readable.
    response.headers["Strict-Transport-Security"] = HSTS


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[_SOCKETS]):
        with contextlib.suppress(Exception):
            await ws.close(code=1001, message=b"server shutting down")


async def _close_worker(app: web.Application) -> None:
    await app[SERVER].worker.close()


async def _close_quality(app: web.Application) -> None:
    await app[QUALITY].close()


async def _close_audit(app: web.Application) -> None:
    # After the Worker, whose teardown still records; the writer thread is joined off the loop.
    await asyncio.to_thread(app[SERVER].audit.close)


def run(config: ServerConfig) -> None:
    """Serve until SIGINT or SIGTERM."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config))


async def start(config: ServerConfig) -> web.AppRunner:
    """The app serving on ``config.host:port`` behind the connection guard; caller cleans up.

    An AppRunner rather than web.run_app: the guard needs the runner's Server.
    """
    app = create_app(config)
    runner = web.AppRunner(
        app,
        access_log_class=SafeAccessLogger,
        keepalive_timeout=config.guard.keepalive_timeout_s,
        shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    try:
        assert runner.server is not None
        app[GUARD].attach(runner.server)
        ssl = None
        if config.tls_cert is not None and config.tls_key is not None:
            ssl = ssl_context(config.tls_cert, config.tls_key)
        site = GuardedSite(runner, config.host, config.port, limits=config.guard, ssl_context=ssl)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def _serve(config: ServerConfig) -> None:
    raise_open_files_limit()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = await start(config)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
