"""One participant's WebSocket: join, then every message checked and handled in order.

Nothing a client sends can hurt another: bad input gets a typed ``error`` and the socket
lives on; a flood is rate-limited and then cut; whatever way the socket ends (leave, close,
vanishing mid-negotiation, a failed media session), ``_teardown`` removes the participant
from the store, the Hub and the Worker exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from media.errors import MediaError
from media.session import PeerSession, SlotDescription
from rooms.consultation import Participant, new_participant_id
from rooms.errors import RoomError
from rooms.roles import PERMISSIONS, Permission, can
from signaling import protocol as p
from signaling.recording import ConsultationRecording
from signaling.tokens import Grant, TokenError, verify

if TYPE_CHECKING:
    from signaling.server import Server

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 10.0
# Token bucket per socket: a browser sends a few messages a second (candidates come in a
# burst at the start), so 50/s with a burst of 100 never touches an honest client.
RATE_PER_S = 50.0
RATE_BURST = 100.0
# Refusals in a row before the socket is cut: a client ignoring rate_limited is hostile.
MAX_RATE_STRIKES = 1000
OUTBOX_LIMIT = 256
WRITER_FLUSH_S = 2.0

CLOSE_TOKEN = 4001
CLOSE_ADMISSION = 4003
CLOSE_POLICY = 4008
CLOSE_NORMAL = 1000


class ClientConnection:
    def __init__(self, server: Server, ws: web.WebSocketResponse) -> None:
        self.server = server
        self.ws = ws
        self.grant: Grant | None = None
        self.participant: Participant | None = None
        self.session: PeerSession | None = None
        self._outbox: asyncio.Queue[p._Message | None] = asyncio.Queue(OUTBOX_LIMIT)
        self._tokens = RATE_BURST
        self._refill_at = time.monotonic()
        self._strikes = 0
        self._torn_down = False
        self._ending: str | None = None

    def __repr__(self) -> str:
        who = self.participant.id if self.participant else "unjoined"
        return f"ClientConnection({who})"

    @property
    def consultation_id(self) -> str | None:
        return self.grant.consultation_id if self.grant else None

    # ------------------------------------------------------------ outgoing

    def post(self, message: p._Message) -> None:
        """Queue a message for this client; one writer task keeps them in order."""
        try:
            self._outbox.put_nowait(message)
        except asyncio.QueueFull:
            # A client that stops reading must not make the server hold unbounded state.
            log.warning("%r is not reading its messages; disconnecting", self)
            self.end("too slow to read signaling messages")

    async def send_offer(self, sdp: str, slots: list[SlotDescription]) -> None:
        self.post(
            p.Offer(
                sdp=sdp,
                tracks=[
                    p.TrackSlot(
                        mid=s.mid,
                        kind=s.kind,
                        role=s.role,
                        participantId=s.participant_id,
                        producerId=s.producer_id,
                    )
                    for s in slots
                ],
            )
        )

    def end(self, reason: str) -> None:
        """End this participant's session from anywhere (e.g. a failed media session).

        The writer sends what is queued, then ``bye``, then closes the socket; the reader
        sees the close and the usual teardown runs.
        """
        if self._ending is not None:
            return
        self._ending = reason
        try:
            self._outbox.put_nowait(p.Bye(reason=reason))
            self._outbox.put_nowait(None)
        except asyncio.QueueFull:
            # Not reading at all: no point queueing a goodbye.
            asyncio.get_running_loop().create_task(self.ws.close(code=CLOSE_POLICY))

    async def _write(self) -> None:
        while True:
            message = await self._outbox.get()
            if self.ws.closed:
                return
            if message is None:
                await self.ws.close(code=CLOSE_POLICY if self._ending else CLOSE_NORMAL)
                return
            try:
                await self.ws.send_str(p.dump(message))
            except (ConnectionError, RuntimeError):
                return

    async def _refuse(self, error: p.ProtocolError | TokenError | RoomError, close: int) -> None:
        code = error.code
        message = error.message if isinstance(error, p.ProtocolError) else str(error)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(p.dump(p.Error(code=code, message=message, ref="join")))  # type: ignore[arg-type]
            await self.ws.close(code=close, message=message.encode()[:120])

    # ------------------------------------------------------------ incoming

    async def run(self) -> None:
        writer = asyncio.create_task(self._write(), name="ws-writer")
        try:
            if await self._join():
                await self._serve()
        finally:
            await self._teardown()
            # Let the writer flush (a bye, above all), bounded, then make sure it is closed.
            with contextlib.suppress(asyncio.QueueFull):
                self._outbox.put_nowait(None)
            try:
                await asyncio.wait_for(writer, WRITER_FLUSH_S)
            except (TimeoutError, ConnectionError, RuntimeError):
                writer.cancel()
            if not self.ws.closed:
                await self.ws.close()

    async def _receive(self, timeout: float | None = None) -> str | None:
        """The next text frame, or None when the socket is done."""
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type == WSMsgType.TEXT:
                return msg.data
            if msg.type == WSMsgType.BINARY:
                self.post(p.Error(code="malformed", message="binary frames are not accepted"))
                continue
            if msg.type == WSMsgType.ERROR and isinstance(msg.data, ValueError):
                # aiohttp reports an oversized frame this way, then closes.
                log.info("%r sent an invalid frame: %s", self, msg.data)
            return None

    async def _join(self) -> bool:
        try:
            raw = await self._receive(timeout=JOIN_TIMEOUT_S)
        except TimeoutError:
            await self._refuse(
                p.ProtocolError("not_joined", "no join message in time"), CLOSE_POLICY
            )
            return False
        if raw is None:
            return False
        try:
            message = p.parse_client(raw)
            if not isinstance(message, p.Join):
                raise p.ProtocolError("not_joined", "the first message must be join", message.type)
        except p.ProtocolError as exc:
            await self._refuse(exc, CLOSE_POLICY)
            return False
        try:
            grant = verify(self.server.config.secret, message.token)
        except TokenError as exc:
            log.info("join refused: %s", exc.code)
            await self._refuse(exc, CLOSE_TOKEN)
            return False

        publish = tuple(dict.fromkeys(message.publish))
        if publish and not can(grant.role, Permission.publish):
            self.post(
                p.Error(
                    code="forbidden",
                    message=f"role {grant.role} may not publish; joining to receive only",
                    ref="join",
                )
            )
            publish = ()
        participant = Participant(
            id=new_participant_id(),
            identity=grant.identity,
            name=grant.name,
            role=grant.role,
            joined_at=time.time(),
        )
        try:
            _, replaced = await self.server.store.join(
                grant.consultation_id, grant.kind, participant
            )
        except RoomError as exc:
            log.info("join to %s refused: %s", grant.consultation_id, exc.code)
            await self._refuse(exc, CLOSE_ADMISSION)
            return False
        self.grant, self.participant = grant, participant
        if replaced is not None:
            old = self.server.hub.get(grant.consultation_id, replaced.id)
            if old is not None:
                # The store has dropped it already; its own teardown's leave() is a no-op.
                old.end("replaced by a newer connection of the same participant")
        log.info(
            "participant %s joined consultation %s as %s",
            participant.id,
            grant.consultation_id,
            grant.role,
        )
        others = [
            _info(x)
            for x in await self.server.store.participants(grant.consultation_id)
            if x.id != participant.id
        ]
        self.post(
            p.Joined(
                participant=_info(participant),
                consultation=p.ConsultationInfo(id=grant.consultation_id, kind=grant.kind),
                participants=others,
                iceServers=[
                    p.IceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                    for s in self.server.config.media.ice_servers
                ],
                permissions=sorted(PERMISSIONS[grant.role]),
            )
        )
        self.server.hub.add(grant.consultation_id, participant.id, self)
        self.server.hub.broadcast(
            grant.consultation_id,
            p.ParticipantJoined(participant=_info(participant)),
            exclude=participant.id,
        )
        self.server.audit.record(
            "join",
            consultation=grant.consultation_id,
            participant=participant.id,
            identity=grant.identity,
            role=str(grant.role),
        )
        recording = self.server.recordings.get(grant.consultation_id)
        if recording is not None:
            recording.joined(participant)
        self.session = self.server.worker.open_session(
            grant.consultation_id,
            participant.id,
            publish=publish,  # type: ignore[arg-type]
            subscribe=can(grant.role, Permission.subscribe),
            signal=self,
        )
        return True

    async def _serve(self) -> None:
        while True:
            raw = await self._receive()
            if raw is None:
                return
            if not self._take_token():
                self._strikes += 1
                if self._strikes > MAX_RATE_STRIKES:
                    self.end("too many messages")
                    return
                if self._strikes == 1:
                    # Once per run of refusals: answering each one would amplify a flood.
                    self.post(p.Error(code="rate_limited", message="slow down"))
                continue
            self._strikes = 0
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

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(RATE_BURST, self._tokens + (now - self._refill_at) * RATE_PER_S)
        self._refill_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def _handle(self, message: p.ClientMessage) -> bool:
        assert self.grant is not None and self.participant is not None
        assert self.session is not None
        if isinstance(message, p.Answer):
            await self.session.accept_answer(message.sdp)
        elif isinstance(message, p.Candidate):
            await self.session.add_candidate(
                message.candidate, message.sdpMid, message.sdpMLineIndex
            )
        elif isinstance(message, p.Mute):
            if not can(self.grant.role, Permission.publish):
                raise p.ProtocolError(
                    "forbidden", "nothing to mute: this role cannot publish", "mute"
                )
            await self.server.store.set_muted(
                self.grant.consultation_id, self.participant.id, message.kind, message.muted
            )
            self.server.hub.broadcast(
                self.grant.consultation_id,
                p.MuteChanged(
                    participantId=self.participant.id, kind=message.kind, muted=message.muted
                ),
                exclude=self.participant.id,
            )
        elif isinstance(message, p.Ping):
            self.post(p.Pong(ts=message.ts))
        elif isinstance(message, p.Leave):
            self.post(p.Bye(reason="left"))
            return False
        elif isinstance(message, p.Record):
            await self._record(message)
        elif isinstance(message, p.Consent):
            recording = self.server.recordings.get(self.grant.consultation_id)
            if recording is None:
                raise p.ProtocolError("unexpected", "no recording is asking for consent", "consent")
            recording.answer(self.participant, message.granted)
        elif isinstance(message, p.Join):
            raise p.ProtocolError("already_joined", "this socket has joined already", "join")
        return True

    async def _record(self, message: p.Record) -> None:
        assert self.grant is not None and self.participant is not None
        if not can(self.grant.role, Permission.record):
            raise p.ProtocolError("forbidden", f"role {self.grant.role} may not record", "record")
        consultation_id = self.grant.consultation_id
        recording = self.server.recordings.get(consultation_id)
        if message.action == "stop":
            if recording is None:
                raise p.ProtocolError("unexpected", "nothing is being recorded", "record")
            recording.stop("stopped", by=self.participant.id)
            return
        if recording is not None:
            raise p.ProtocolError("unexpected", f"recording is already {recording.state}", "record")
        recording = ConsultationRecording(
            self.server, self.server.recording_store, consultation_id, self.participant.id
        )
        self.server.recordings[consultation_id] = recording
        await recording.begin(await self.server.store.participants(consultation_id))

    # ------------------------------------------------------------ teardown

    async def _teardown(self) -> None:
        if self._torn_down or self.grant is None or self.participant is None:
            return
        self._torn_down = True
        consultation_id, participant_id = self.grant.consultation_id, self.participant.id
        if self.server.hub.get(consultation_id, participant_id) is self:
            self.server.hub.remove(consultation_id, participant_id)
        await self.server.worker.close_session(consultation_id, participant_id)
        await self.server.store.leave(consultation_id, participant_id)
        self.server.hub.broadcast(consultation_id, p.ParticipantLeft(participantId=participant_id))
        recording = self.server.recordings.get(consultation_id)
        if recording is not None:
            if self.server.hub.participant_ids(consultation_id):
                recording.left(participant_id)
            else:
                recording.stop("everyone_left")
        self.server.audit.record("leave", consultation=consultation_id, participant=participant_id)
        log.info("participant %s left consultation %s", participant_id, consultation_id)


def _info(participant: Participant) -> p.ParticipantInfo:
    return p.ParticipantInfo(
        id=participant.id,
        name=participant.name,
        role=participant.role,
        audioMuted=participant.audio_muted,
        videoMuted=participant.video_muted,
    )
