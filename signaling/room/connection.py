"""One participant's WebSocket: the transport in front of a Room.

It authenticates the ``join`` (token, revocation, publish rights), hands the participant to
their consultation's Room, then passes each message on in order; the Room holds the rules.
Nothing a client sends can hurt another: bad input gets a typed ``error`` and the socket
lives on; a flood is rate-limited and then cut; a client that stops reading is dropped;
whatever way the socket ends (leave, close, vanishing mid-negotiation, a failed media
session), ``_teardown`` has the Room let the participant go exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from media.codecs import video_codecs_named
from media.errors import MediaError
from rooms.errors import RoomError
from rooms.roles import Permission, can
from signaling import protocol as p
from signaling.room.limits import ConnectionBudget, Verdict
from signaling.room.remote import JoinRefused
from signaling.tokens import TokenError, verify

if TYPE_CHECKING:
    from signaling.room.members import Member, ParticipantLink
    from signaling.room.remote import Proxy
    from signaling.room.room import Room
    from signaling.server import Server

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 10.0
OUTBOX_LIMIT = 256
WRITER_FLUSH_S = 2.0
# Every write to the socket is bounded: a client that stops reading fills its TCP window and
# then our send would wait forever, and with it the bye, the close and aiohttp's heartbeat.
SEND_TIMEOUT_S = 5.0
# Our own heartbeat, because aiohttp skips its ping while data keeps arriving: a client that
# sends but never reads would never be found out. Browsers answer pings in their network
# stack, even in a background tab.
HEARTBEAT_S = 5.0
PONG_DEADLINE_S = 15.0

CLOSE_TOKEN = 4001
CLOSE_ADMISSION = 4003
CLOSE_POLICY = 4008
CLOSE_NORMAL = 1000


class ClientConnection:
    def __init__(
        self,
        server: Server,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None = None,
    ) -> None:
        self.server = server
        self.ws = ws
        self.room: Room | None = None
        self.member: Member | None = None
        # Set when the consultation's Room is on another node: the socket is relayed there.
        self.proxy: Proxy | None = None
        self._outbox: asyncio.Queue[p._Message | None] = asyncio.Queue(OUTBOX_LIMIT)
        self._budget = ConnectionBudget()
        # The socket under the WebSocket: abort() drops it at once, where a close would
        # wait for a client that does not read to take what is buffered.
        self._transport = transport
        self._last_pong = time.monotonic()
        self._torn_down = False
        # Why the server ended the session (a bye was sent): it is over, not held.
        self._ending: str | None = None
        # Why the server dropped the socket without a bye (not reading): held for a resume.
        self._dropped: str | None = None
        self._left = False

    def __repr__(self) -> str:
        who = self.member.id if self.member else "unjoined"
        return f"ClientConnection({who})"

    @property
    def joined(self) -> bool:
        return self.member is not None or self.proxy is not None

    # ------------------------------------------------------------ outgoing

    def post(self, message: p._Message) -> None:
        """Queue a message for this client; one writer task keeps them in order."""
        try:
            self._outbox.put_nowait(message)
        except asyncio.QueueFull:
            # A client that stops reading must not make the server hold unbounded state.
            log.warning("%r is not reading its messages; disconnecting", self)
            self.end("too slow to read signaling messages")

    def end(self, reason: str, message: str | None = None) -> None:
        """End this participant's session from anywhere (e.g. a failed media session).

        The writer sends what is queued, then ``bye``, then closes the socket; the reader
        sees the close and the usual teardown runs.
        """
        if self._ending is not None:
            return
        self._ending = reason
        try:
            self._outbox.put_nowait(p.Bye(reason=reason, message=message))
            self._outbox.put_nowait(None)
        except asyncio.QueueFull:
            # Not reading at all: no point queueing a goodbye.
            self.abort(reason)

    def abort(self, reason: str) -> None:
        """Drop the connection now, without a goodbye: the client is not reading. Its
        session is held for a resume (a stalled link is often a network switching)."""
        log.info("%r: connection dropped: %s", self, reason)
        self._dropped = reason
        if self._transport is not None:
            self._transport.abort()
        else:
            asyncio.get_running_loop().create_task(self._close(CLOSE_POLICY))

    async def _close(self, code: int, message: bytes = b"") -> None:
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await self.ws.close(code=code, message=message)
        except TimeoutError:
            if self._transport is not None:
                self._transport.abort()

    async def _write(self) -> None:
        while True:
            message = await self._outbox.get()
            if self.ws.closed:
                return
            if message is None:
                await self._close(CLOSE_POLICY if self._ending else CLOSE_NORMAL)
                return
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await self.ws.send_str(p.dump(message))
            except TimeoutError:
                self.abort("not reading (a send timed out)")
                return
            except (ConnectionError, RuntimeError):
                return

    async def _heartbeat(self) -> None:
        while not self.ws.closed:
            await asyncio.sleep(HEARTBEAT_S)
            if time.monotonic() - self._last_pong > PONG_DEADLINE_S:
                self.abort("no pong to the heartbeat")
                return
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await self.ws.ping()
            except TimeoutError:
                self.abort("not reading (a ping timed out)")
                return
            except (ConnectionError, RuntimeError):
                return

    async def _refuse(self, error: p.ProtocolError | TokenError | RoomError, close: int) -> None:
        code = error.code
        message = error.message if isinstance(error, p.ProtocolError) else str(error)
        with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await self.ws.send_str(p.dump(p.Error(code=code, message=message, ref="join")))  # type: ignore[arg-type]
        # A close reason must be UTF-8 and fit the frame: cut on a character, not a byte.
        await self._close(close, message.encode()[:120].decode(errors="ignore").encode())

    # ------------------------------------------------------------ incoming

    async def run(self) -> None:
        writer = asyncio.create_task(self._write(), name="ws-writer")
        heartbeat = asyncio.create_task(self._heartbeat(), name="ws-heartbeat")
        try:
            if await self._join():
                await self._serve()
        finally:
            heartbeat.cancel()
            await self._teardown()
            # Let the writer flush (a bye, above all), bounded, then make sure it is closed.
            with contextlib.suppress(asyncio.QueueFull):
                self._outbox.put_nowait(None)
            try:
                await asyncio.wait_for(writer, WRITER_FLUSH_S)
            except (TimeoutError, ConnectionError, RuntimeError):
                writer.cancel()
            if not self.ws.closed:
                await self._close(CLOSE_NORMAL)

    async def _receive(self) -> str | None:
        """The next text frame, or None when the socket is done."""
        while True:
            msg = await self.ws.receive()
            if msg.type == WSMsgType.TEXT:
                return msg.data
            if msg.type == WSMsgType.PONG:
                self._last_pong = time.monotonic()
                continue
            if msg.type == WSMsgType.PING:
                # autoping is off (the heartbeat needs to see pongs), so answer pings here.
                if not self._over_budget(len(msg.data)):
                    with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
                        async with asyncio.timeout(SEND_TIMEOUT_S):
                            await self.ws.pong(msg.data)
                continue
            if msg.type == WSMsgType.BINARY:
                if not self._over_budget(len(msg.data)):
                    self.post(p.Error(code="malformed", message="binary frames are not accepted"))
                continue
            if msg.type == WSMsgType.ERROR and isinstance(msg.data, ValueError):
                # aiohttp reports an oversized frame this way, then closes.
                log.info("%r sent an invalid frame: %s", self, msg.data)
            return None

    async def _join(self) -> bool:
        try:
            # One deadline for the join, not one per frame: binary frames or pings would
            # otherwise keep an unjoined socket open for ever.
            async with asyncio.timeout(JOIN_TIMEOUT_S):
                raw = await self._receive()
        except TimeoutError:
            await self._refuse(
                p.ProtocolError("not_joined", "no join message in time"), CLOSE_POLICY
            )
            return False
        if raw is None:
            return False
        received_at = time.monotonic()
        try:
            message = p.parse_client(raw)
            if not isinstance(message, p.Join):
                raise p.ProtocolError("not_joined", "the first message must be join", message.type)
        except p.ProtocolError as exc:
            await self._refuse(exc, CLOSE_POLICY)
            return False
        try:
            # Checked here first: an unauthenticated socket costs no other node anything.
            grant = verify(self.server.config.secret, message.token)
        except TokenError as exc:
            log.info("join refused: %s", exc.code)
            await self._refuse(exc, CLOSE_TOKEN)
            return False
        relay = self.server.relay
        if relay is not None:
            try:
                self.proxy = await relay.route(self, grant.consultation_id, raw, received_at)
            except JoinRefused as exc:
                log.info("join to %s refused: %s", grant.consultation_id, exc.code)
                await self._refuse(p.ProtocolError(exc.code, exc.message, "join"), exc.close)
                return False
            if self.proxy is not None:
                return True  # served by the node that owns the consultation's Room
        try:
            self.room, self.member = await enter(self.server, self, message, received_at)
        except TokenError as exc:
            log.info("join refused: %s", exc.code)
            await self._refuse(exc, CLOSE_TOKEN)
            return False
        except RoomError as exc:
            log.info("join to %s refused: %s", grant.consultation_id, exc.code)
            await self._refuse(exc, CLOSE_ADMISSION)
            return False
        except MediaError as exc:
            log.info("join to %s failed: %s", grant.consultation_id, exc.code)
            await self._refuse(p.ProtocolError(exc.code, exc.message, "join"), CLOSE_POLICY)  # type: ignore[arg-type]
            return False
        return True

    def _over_budget(self, size_bytes: int) -> bool:
        """Charge a frame to this connection's budget; True if it must not be handled."""
        verdict = self._budget.admit(size_bytes)
        if verdict is Verdict.accept:
            return False
        if verdict is Verdict.cut:
            log.warning("%r exceeded its message or byte budget; disconnecting", self)
            self.end("too many messages")
        elif self._budget.refusals_in_a_row == 1:
            # Once per run of refusals: answering each one would amplify a flood.
            self.post(p.Error(code="rate_limited", message="slow down"))
        return True

    async def _serve(self) -> None:
        while self._ending is None:
            raw = await self._receive()
            if raw is None:
                return
            # The size in bytes: a str's length is characters, and 4 bytes each can hide in one.
            if self._over_budget(len(raw) if raw.isascii() else len(raw.encode())):
                continue
            try:
                message = p.parse_client(raw)
                if await self._handle(message) is False:
                    return
            except p.ProtocolError as exc:
                self.post(exc.to_message())
            except MediaError as exc:
                self.post(p.Error(code=exc.code, message=exc.message))
            except Exception:
                log.exception("%r: handling a message failed", self)
                self.post(p.Error(code="internal", message="the server could not handle that"))

    async def _handle(self, message: p.ClientMessage) -> bool:
        """Transport-level messages here; the rest is the Room's (here, or relayed to the
        node that owns it). False ends the session."""
        if isinstance(message, p.Ping):
            self.post(p.Pong(ts=message.ts))
        elif isinstance(message, p.Leave):
            self._left = True
            self.post(p.Bye(reason="left"))
            return False
        elif isinstance(message, p.Join):
            raise p.ProtocolError("already_joined", "this socket has joined already", "join")
        elif self.proxy is not None:
            self.proxy.send(p.dump(message))
        else:
            assert self.room is not None and self.member is not None
            await self.room.handle(self.member, message)
        return True

    # ------------------------------------------------------------ teardown

    async def _teardown(self) -> None:
        if self.proxy is not None and not self._torn_down:
            self._torn_down = True
            # The owner does what the branches below do for a local socket.
            self.proxy.gone(held=self._ending is None and not self._left)
            return
        if self._torn_down or self.room is None or self.member is None:
            return
        self._torn_down = True
        if self.member.link is not self:
            return  # resumed on another socket: the session lives there now
        if self._ending is None and not self._left:
            # Dropped without a goodbye from either side: held for the client to resume.
            self.room.detach(self.member)
            return
        await self.room.leave(self.member.id)
        self.server.rooms.release(self.room)


async def enter(
    server: Server, link: ParticipantLink, message: p.Join, received_at: float
) -> tuple[Room, Member]:
    """A join on the node that owns the consultation, whichever node its socket is on:
    the token and revocations checked, then into the Room (resumed, or joined). Raises
    TokenError, RoomError, or MediaError (no media session: the seat is given back)."""
    grant = verify(server.config.secret, message.token)
    await server.revocation.check(grant)
    publish = tuple(dict.fromkeys(message.publish))
    if publish and not can(grant.role, Permission.publish):
        link.post(
            p.Error(
                code="forbidden",
                message=f"role {grant.role} may not publish; joining to receive only",
                ref="join",
            )
        )
        publish = ()
    room = server.rooms.open(grant.consultation_id)
    if server.relay is not None:
        await server.relay.taken_over(room)
    if message.resume is not None:
        resumed = room.resume(link, grant, message.resume)
        if resumed is not None:
            return room, resumed
        # Nothing held for it (it ran out, or the session ended): a new join follows.
    try:
        member = await room.join(
            link,
            grant,
            publish=publish,  # type: ignore[arg-type]
            video_codecs=(
                None if message.videoCodecs is None else video_codecs_named(message.videoCodecs)
            ),
            received_at=received_at,
        )
    except RoomError:
        server.rooms.release(room)
        raise
    except MediaError:
        # Seated, but no media session could be opened (no Worker answered): let go again.
        for seated in [m for m in room.members.values() if m.link is link]:
            await room.leave(seated.id)
        server.rooms.release(room)
        raise
    return room, member
