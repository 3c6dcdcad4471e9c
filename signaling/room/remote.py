"""Participants whose socket is on another signaling node: the relay between nodes.

A consultation's Room lives on one node, its owner (signaling/nodes.py). A participant whose
WebSocket lands on another node (the edge) is served through a ``Proxy`` there: the edge
authenticates the socket, keeps its transport duties (rate limits, pings, the heartbeat) and
relays every other client message to the owner over Redis; the owner's ``RemoteLink`` is the
member's ``link`` in the Room and relays what the Room sends back. The Room does not know
where a socket is.

Messages on ``P relay:N`` (to node N), JSON objects with ``t``, ``from`` (the sending node)
and ``conn`` (the edge's id for the socket):

* to the owner: ``join`` (``raw``: the client's join frame, ``waited``: seconds since it
  arrived), ``up`` (``raw``: one client frame), ``gone`` (``held``: dropped without a
  goodbye, to be held for a resume; else left or ended).
* to the edge: ``accepted``, ``refused`` (``code``, ``message``, ``close``), ``moved`` (the
  owner no longer owns it: claim again), ``down`` (``m``: one server message), ``end``
  (``reason``, ``message``: the server ends the session).

Order: one sender task per node publishes in order over one connection at a time; the owner
handles one socket's messages in order in its own lane. Every wait is bounded: a join that
the owner does not answer in ``JOIN_TIMEOUT_S`` is refused (``node_unavailable``); a node
whose heartbeat stops is dead to the others (the edge drops the sockets it proxied so their
clients reconnect; the owner holds the sessions of a dead edge for a resume). A malformed
relay message is logged and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import weakref
from typing import TYPE_CHECKING, Any, get_args

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from media.errors import MediaError
from rooms.errors import RoomError
from signaling import protocol as p
from signaling.nodes import HEARTBEAT_S, REDIS_WAIT_S, Nodes, NodeUnavailable
from signaling.tokens import TokenError, verify

if TYPE_CHECKING:
    from signaling.room.connection import ClientConnection
    from signaling.room.members import Member
    from signaling.room.room import Room
    from signaling.server import Server

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 15.0
JOIN_RESEND_S = 2.0
# A Room's moves between nodes while a join looks for its owner.
CLAIM_ATTEMPTS = 3
# The owner's own messages to one edge socket, queued: past this the socket is too slow.
LANE_LIMIT = 256
SEND_QUEUE_LIMIT = 10_000
# After the owner ends a remote session, how long it waits for the edge's ``gone`` before it
# lets the participant go by itself (the edge may have died meanwhile).
END_GRACE_S = 5.0
# A node found without a heartbeat for this long is dead (a Redis that restarted empty has
# forgotten every node for up to a heartbeat: not a reason to drop anyone).
DEAD_AFTER_S = 2.5 * HEARTBEAT_S
# Every this many heartbeats, seats nobody owns any more are swept.
JANITOR_BEATS = 5

CLOSE_TOKEN = 4001
CLOSE_ADMISSION = 4003
CLOSE_POLICY = 4008


ERROR_CODES = frozenset(get_args(p.ErrorCode))


class JoinRefused(Exception):
    def __init__(self, code: p.ErrorCode, message: str, close: int) -> None:
        super().__init__(message)
        self.code: p.ErrorCode = code
        self.message = message
        self.close = close


# ================================================================ the edge's end


class Proxy:
    """On the edge: one client's socket, served by the Room on the owning node."""

    def __init__(self, relay: Relay, connection: ClientConnection, owner: str) -> None:
        self.relay = relay
        self.connection = connection
        self.owner = owner
        self.id = secrets.token_hex(8)
        self.reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"Proxy({self.id} -> {self.owner})"

    def send(self, raw: str) -> None:
        self.relay.send(self.owner, {"t": "up", "conn": self.id, "raw": raw})

    def gone(self, *, held: bool) -> None:
        self.relay.send(self.owner, {"t": "gone", "conn": self.id, "held": held})
        self.relay.proxies.pop(self.id, None)


# ================================================================ the owner's end


class RemoteLink:
    """On the owner: how the Room reaches a participant whose socket is on another node."""

    def __init__(self, lane: Lane) -> None:
        self._lane = lane

    def __repr__(self) -> str:
        return f"RemoteLink({self._lane.node}/{self._lane.conn})"

    def post(self, message: p._Message) -> None:
        self._lane.relay.send(
            self._lane.node, {"t": "down", "conn": self._lane.conn, "m": p.dump(message)}
        )

    def end(self, reason: str, message: str | None = None) -> None:
        lane = self._lane
        if lane.ending:
            return
        lane.ending = True
        lane.relay.send(
            lane.node, {"t": "end", "conn": lane.conn, "reason": reason, "message": message}
        )
        # Ended here: let go after a while even if the edge never says it is gone.
        asyncio.get_running_loop().call_later(END_GRACE_S, lane.put, {"t": "gone", "held": False})


class Lane:
    """On the owner: one remote socket's messages, handled in order, as a ClientConnection
    would handle its own."""

    def __init__(self, relay: Relay, node: str, conn: str) -> None:
        self.relay = relay
        self.node = node
        self.conn = conn
        self.link = RemoteLink(self)
        self.room: Room | None = None
        self.member: Member | None = None
        self.ending = False
        self.done = False
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(LANE_LIMIT)
        self.task: asyncio.Task[None] | None = None

    def put(self, message: dict[str, Any]) -> None:
        if self.done:
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            log.warning(
                "relay: %s/%s sends faster than it is served; ending it", self.node, self.conn
            )
            self.link.end("too many messages")

    def _reply(self, message: dict[str, Any]) -> None:
        self.relay.send(self.node, {**message, "conn": self.conn})

    async def run(self) -> None:
        try:
            first = await self._queue.get()
            if first.get("t") != "join" or not await self._join(first):
                return
            while True:
                message = await self._queue.get()
                kind = message.get("t")
                if kind == "up":
                    await self._handle(str(message["raw"]))
                elif kind == "gone":
                    await self._gone(bool(message.get("held")))
                    return
        finally:
            self.done = True
            self.relay.lanes.pop((self.node, self.conn), None)

    async def _join(self, message: dict[str, Any]) -> bool:
        from signaling.room.connection import enter

        server = self.relay.server
        try:
            join = p.parse_client(str(message["raw"]))
            if not isinstance(join, p.Join):
                raise p.ProtocolError("not_joined", "the first message must be join")
            # The consultation is the token's, whatever the edge said it was.
            cid = verify(server.config.secret, join.token).consultation_id
        except TokenError as exc:
            self._refuse(exc.code, str(exc), CLOSE_TOKEN)
            return False
        except p.ProtocolError as exc:
            self._refuse(exc.code, exc.message, CLOSE_POLICY)
            return False
        try:
            owner = await self.relay.nodes.claim(cid)
        except NodeUnavailable as exc:
            self._refuse("node_unavailable", str(exc), CLOSE_POLICY)
            return False
        if owner != self.relay.node_id:
            self._reply({"t": "moved"})
            return False
        received_at = time.monotonic() - min(max(float(message.get("waited", 0.0)), 0.0), 60.0)
        try:
            self.room, self.member = await enter(server, self.link, join, received_at)
        except TokenError as exc:
            self._refuse(exc.code, str(exc), CLOSE_TOKEN)
            return False
        except RoomError as exc:
            self._refuse(exc.code, str(exc), CLOSE_ADMISSION)  # type: ignore[arg-type]
            return False
        except (p.ProtocolError, MediaError) as exc:
            self._refuse(exc.code, exc.message, CLOSE_POLICY)  # type: ignore[arg-type]
            return False
        self._reply({"t": "accepted"})
        return True

    def _refuse(self, code: str, message: str, close: int) -> None:
        self._reply({"t": "refused", "code": code, "message": message, "close": close})

    async def _handle(self, raw: str) -> None:
        assert self.room is not None and self.member is not None
        if self.member.link is not self.link:
            return  # resumed on another socket: this one is stale
        try:
            await self.room.handle(self.member, p.parse_client(raw))
        except p.ProtocolError as exc:
            self.link.post(exc.to_message())
        except MediaError as exc:
            self.link.post(p.Error(code=exc.code, message=exc.message))  # type: ignore[arg-type]
        except Exception:
            log.exception("relay: handling a message of %s failed", self.conn)
            self.link.post(p.Error(code="internal", message="the server could not handle that"))

    async def _gone(self, held: bool) -> None:
        """The edge's socket closed: what ClientConnection._teardown does for its own."""
        room, member = self.room, self.member
        assert room is not None and member is not None
        if member.link is not self.link:
            return
        if held and not self.ending:
            room.detach(member)
            return
        await room.leave(member.id)
        self.relay.server.rooms.release(room)


# ================================================================ the node's relay


class Relay:
    """This node's end of the relay: claims, the proxies it serves as an edge, the lanes it
    serves as an owner, and the heartbeat that keeps its claims."""

    def __init__(self, redis: aioredis.Redis, server: Server, nodes: Nodes) -> None:
        self.redis = redis
        self.server = server
        self.nodes = nodes
        self.node_id = nodes.node_id
        self.prefix = nodes.prefix
        self.proxies: dict[str, Proxy] = {}
        self.lanes: dict[tuple[str, str], Lane] = {}
        self._outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue(SEND_QUEUE_LIMIT)
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        self._suspects: dict[str, float] = {}
        # The takeover of a Room whose previous owner died, once per Room.
        self._ready: weakref.WeakKeyDictionary[Room, asyncio.Task[None]] = (
            weakref.WeakKeyDictionary()
        )
        self._releases: set[asyncio.Task[None]] = set()
        server.rooms.on_released = self._released

    def _channel(self, node_id: str) -> str:
        return f"{self.prefix}relay:{node_id}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen(), name="relay-listener"),
            loop.create_task(self._send_loop(), name="relay-sender"),
            loop.create_task(self._heartbeat(), name="relay-heartbeat"),
        ]
        async with asyncio.timeout(REDIS_WAIT_S):
            await self._subscribed.wait()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self.nodes.retire()

    # ------------------------------------------------------------ sending, in order

    def send(self, node_id: str, message: dict[str, Any]) -> None:
        try:
            self._outbox.put_nowait(
                (self._channel(node_id), json.dumps({**message, "from": self.node_id}))
            )
        except asyncio.QueueFull:
            log.warning("relay: the send queue is full; a message to %s is dropped", node_id)

    async def _send_loop(self) -> None:
        while True:
            batch = [await self._outbox.get()]
            while not self._outbox.empty() and len(batch) < 256:
                batch.append(self._outbox.get_nowait())
            deadline = time.monotonic() + REDIS_WAIT_S
            while True:
                try:
                    # One pipeline on one connection: Redis delivers in this order.
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for channel, payload in batch:
                            pipe.publish(channel, payload)
                        await pipe.execute()
                    break
                except (RedisError, OSError) as exc:
                    if time.monotonic() > deadline:
                        log.warning("relay: %d message(s) dropped: %s", len(batch), exc)
                        break
                    await asyncio.sleep(0.3)

    # ------------------------------------------------------------ receiving

    async def _listen(self) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel(self.node_id))
                    self._subscribed.set()
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message is not None:
                            self._dispatch(message.get("data"))
            except (RedisError, OSError) as exc:
                # Until subscribed again, what is published to us is lost: joins wait.
                self._subscribed.clear()
                log.warning("node %s: relay lost (%s); retrying", self.node_id, exc)
                await asyncio.sleep(0.5)

    def _dispatch(self, data: Any) -> None:
        try:
            message = json.loads(data)
            if not isinstance(message, dict):
                raise ValueError("not an object")
            kind, node, conn = str(message["t"]), str(message["from"]), str(message["conn"])
            if kind in ("join", "up", "gone"):
                self._to_owner(kind, node, conn, message)
            elif kind in ("accepted", "refused", "moved", "down", "end"):
                self._to_edge(kind, conn, message)
            else:
                raise ValueError(f"unknown relay message {kind!r}")
        except (ValueError, TypeError, KeyError, ValidationError) as exc:
            log.warning("node %s: malformed relay message dropped: %s", self.node_id, exc)

    def _to_owner(self, kind: str, node: str, conn: str, message: dict[str, Any]) -> None:
        lane = self.lanes.get((node, conn))
        if kind == "join":
            if lane is not None:
                return  # sent again while the first was on its way: one lane serves it
            str(message["cid"]), str(message["raw"])
            lane = self.lanes[(node, conn)] = Lane(self, node, conn)
            lane.task = asyncio.get_running_loop().create_task(
                lane.run(), name=f"relay-lane-{conn}"
            )
        elif lane is None:
            return  # its session is over here
        lane.put(message)

    def _to_edge(self, kind: str, conn: str, message: dict[str, Any]) -> None:
        proxy = self.proxies.get(conn)
        if proxy is None:
            if kind in ("down", "end"):
                # The owner still serves a socket this node no longer has (its ``gone`` was
                # lost, e.g. while Redis was down): it is let go now.
                self.send(str(message["from"]), {"t": "gone", "conn": conn, "held": False})
            return
        if kind == "down":
            proxy.connection.post(p.parse_server(str(message["m"])))
        elif kind == "end":
            note = message.get("message")
            proxy.connection.end(str(message["reason"]), None if note is None else str(note))
        elif not proxy.reply.done():
            proxy.reply.set_result(message)

    # ------------------------------------------------------------ the edge: joining

    async def route(
        self, connection: ClientConnection, consultation_id: str, raw: str, received_at: float
    ) -> Proxy | None:
        """Where this socket's consultation lives: None if here (serve it locally), else a
        Proxy to the owner that has accepted the join. Raises JoinRefused."""
        for _ in range(CLAIM_ATTEMPTS):
            try:
                owner = await self.nodes.claim(consultation_id)
            except NodeUnavailable as exc:
                raise JoinRefused("node_unavailable", str(exc), CLOSE_POLICY) from None
            if owner == self.node_id:
                return None
            proxy = Proxy(self, connection, owner)
            self.proxies[proxy.id] = proxy
            try:
                async with asyncio.timeout(JOIN_TIMEOUT_S):
                    # Our answer must find us listening (after a Redis restart: again).
                    await self._subscribed.wait()
                    while True:
                        # Sent again until answered: a Redis restart loses what is published
                        # to a node not yet subscribed again; the owner serves one join once.
                        self.send(owner, {"t": "join", "conn": proxy.id, "cid": consultation_id,
                                          "raw": raw,
                                          "waited": time.monotonic() - received_at})  # fmt: skip
                        done, _ = await asyncio.wait({proxy.reply}, timeout=JOIN_RESEND_S)
                        if done:
                            break
                    reply = proxy.reply.result()
            except TimeoutError:
                proxy.gone(held=False)  # if it comes late, it is let go at once
                log.warning("node %s: owner %s did not answer a join in time", self.node_id, owner)
                raise JoinRefused(
                    "node_unavailable", "the node holding this consultation did not answer",
                    CLOSE_POLICY,
                ) from None  # fmt: skip
            kind = reply["t"]
            if kind == "accepted":
                return proxy
            self.proxies.pop(proxy.id, None)
            if kind == "refused":
                code = reply.get("code")
                close = reply.get("close")
                raise JoinRefused(
                    code if code in ERROR_CODES else "internal",
                    str(reply.get("message", ""))[:200],
                    close if close in (CLOSE_TOKEN, CLOSE_ADMISSION) else CLOSE_POLICY,
                )
            # moved: claim again
        raise JoinRefused("node_unavailable", "the consultation keeps moving", CLOSE_POLICY)

    # ------------------------------------------------------------ the owner: taking over

    async def taken_over(self, room: Room) -> None:
        """Before the first join to a Room made here: seats in the RoomStore that no Room
        holds are left by an owner that died (its claim expired); they go, once."""
        task = self._ready.get(room)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._sweep(room))
            self._ready[room] = task
        await asyncio.shield(task)

    async def _sweep(self, room: Room) -> None:
        try:
            await self._sweep_seats(room.consultation_id, {*room.members, *room.waiting})
        except (RedisError, OSError, RoomError) as exc:
            # Best effort: the joins go on; a stale seat left is replaced when the same
            # person comes back, or goes with the consultation.
            log.warning("sweeping stale seats of %s failed: %s", room.consultation_id, exc)

    async def _sweep_seats(self, cid: str, keep: set[str]) -> None:
        server = self.server
        stale = [x for x in await server.store.participants(cid) if x.id not in keep]
        if not stale:
            return
        log.warning("consultation %s taken over: sweeping %d stale seat(s)", cid, len(stale))
        close_orphan = getattr(server.worker, "close_orphan_session", None)
        for participant in stale:
            await server.store.leave(cid, participant.id)
            if close_orphan is not None:
                await close_orphan(cid, participant.id)
            server.audit.record("seat_swept", consultation=cid, participant=participant.id)
        with contextlib.suppress(MediaError):
            # A recording the lost owner ran has lost its consents with it.
            await server.worker.stop_recording(cid, "node_lost")

    def _released(self, consultation_id: str) -> None:
        """Its Room was dropped here: let the claim go, so the next join anywhere may own it."""

        async def release() -> None:
            if self.server.rooms.get(consultation_id) is None:
                await self.nodes.release(consultation_id)

        task = asyncio.get_running_loop().create_task(release())
        self._releases.add(task)
        task.add_done_callback(self._released_done)

    def _released_done(self, task: asyncio.Task[None]) -> None:
        self._releases.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("releasing a claim failed (it expires by itself): %s", task.exception())

    # ------------------------------------------------------------ heartbeat and liveness

    async def _heartbeat(self) -> None:
        beats = 0
        while True:
            beats += 1
            try:
                await self.nodes.beat()
                await self._keep_claims()
                await self._check_peers()
                if beats % JANITOR_BEATS == 0:
                    await self._sweep_abandoned()
            except (RedisError, OSError) as exc:
                # Redis down: calls go on (media does not pass through it); try again.
                log.info("node %s: heartbeat failed (%s)", self.node_id, exc)
            await asyncio.sleep(HEARTBEAT_S)

    async def _keep_claims(self) -> None:
        owned = [room.consultation_id for room in self.server.rooms]
        retaken, lost = await self.nodes.renew(owned)
        for cid in retaken:
            # Redis restarted empty: our Room's seats are told again.
            await self._reseat(cid)
        for cid in lost:
            log.error("node %s: another node took consultation %s", self.node_id, cid)

    async def _sweep_abandoned(self) -> None:
        """Seats of consultations nobody owns (their owner died and nobody came back): taken
        over for a moment and swept, as a join there would."""
        for consultation in await self.server.store.consultations():
            cid = consultation.id
            if consultation.ended or self.server.rooms.get(cid) is not None:
                continue
            if await self.nodes.owner(cid) is not None:
                continue
            if not await self.server.store.participants(cid):
                continue
            if await self.nodes.try_claim(cid) != self.node_id:
                continue
            try:
                await self._sweep_seats(cid, set())
            finally:
                if self.server.rooms.get(cid) is None:
                    await self.nodes.release(cid)

    async def _reseat(self, cid: str) -> None:
        room = self.server.rooms.get(cid)
        if room is None:
            return
        store = self.server.store
        seated = {x.id for x in await store.participants(cid)}
        for member in list(room.members.values()):
            if member.id not in seated:
                from rooms.consultation import ConsultationKind

                with contextlib.suppress(RoomError):
                    await store.join(cid, ConsultationKind(member.grant.kind), member.participant)
        log.info("node %s: consultation %s re-claimed after Redis forgot it", self.node_id, cid)

    async def _check_peers(self) -> None:
        peers = {proxy.owner for proxy in self.proxies.values()}
        peers |= {node for node, _ in self.lanes}
        now = time.monotonic()
        for node in peers:
            if await self.nodes.alive(node):
                self._suspects.pop(node, None)
                continue
            since = self._suspects.setdefault(node, now)
            if now - since < DEAD_AFTER_S:
                continue
            self._suspects.pop(node, None)
            self._peer_died(node)

    def _peer_died(self, node: str) -> None:
        proxied = [x for x in self.proxies.values() if x.owner == node]
        lanes = [lane for (n, _), lane in self.lanes.items() if n == node]
        log.warning(
            "node %s: node %s is gone (%d socket(s) proxied to it, %d of its sockets here)",
            self.node_id,
            node,
            len(proxied),
            len(lanes),
        )
        for proxy in proxied:
            self.proxies.pop(proxy.id, None)
            if not proxy.reply.done():
                # Still joining: refused at once, typed.
                proxy.reply.set_result({"t": "refused", "code": "node_unavailable",
                                        "message": "the node holding this consultation is gone",
                                        "close": CLOSE_POLICY})  # fmt: skip
                continue
            # Without a goodbye: the client reconnects (with its resume token) and lands
            # on a live node, which takes the Room over.
            proxy.connection.abort("the node holding the consultation is gone")
        for lane in lanes:
            lane.put({"t": "gone", "held": True})
