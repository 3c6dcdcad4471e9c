"""Fuzzing sockets: each drives one protocol state and sends Hypothesis' frames in it.

A *lane* owns the sockets of one state and puts them back into that state whenever a frame
took them out of it (a ``leave``, a ``record stop``, a removal, a rate-limit cut). After
every batch it checks what the server did:

* every frame the server sent is a valid server message (``protocol.parse_server``);
* the socket is open and answers a ``ping`` in order, unless the protocol closed it: after
  a ``bye``, after a refused join (an ``error``, then close 4001/4003/4008), after a frame
  over the server's frame limit (1009) or a text frame that is not UTF-8 (1007);
* no ``internal`` error, and no ``rate_limited`` but the limits of consent, media restarts,
  chat and video modes (far below the socket's): the lanes pace
  themselves within signaling/room/limits.py's budgets, so the server must not refuse them.

Anything else is a finding. The same lanes run in the suite (tests/integration/
test_fuzz_protocol.py, a few hundred examples) and in ``make fuzz`` (tests/fuzz/__main__.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from pydantic import ValidationError

from rooms.consultation import ConsultationKind, new_consultation_id
from rooms.roles import Role
from signaling import protocol as p
from signaling.room import limits
from signaling.room.limits import TokenBucket
from signaling.tokens import mint
from tests.fuzz.strategies import MAX_FRAME_BYTES, Context, Frame, State, Wire, render

log = logging.getLogger(__name__)

# Messages with limits of their own, below the socket's: their rate_limited is no finding.
_OWN_LIMITS = frozenset(
    {
        "consent",
        "media_restart",
        "chat",
        "video_policy",
        # A ward round's hands, agenda moves and camera moves.
        "raise_hand",
        "lower_hand",
        "agenda_next",
        "agenda_goto",
        "camera_control",
    }
)

# The lanes' own pace, under the server's budgets (limits.py) with room to spare: the
# server must never need to refuse a lane, so a rate_limited reply is a finding.
PACE_MESSAGES_PER_S = 0.8 * limits.MESSAGES_PER_S
PACE_MESSAGE_BURST = 0.4 * limits.MESSAGE_BURST
PACE_BYTES_PER_S = 0.75 * limits.BYTES_PER_S
PACE_BYTE_BURST = 0.5 * limits.BYTE_BURST

REPLY_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
# Close codes the server uses on purpose (signaling/room/connection.py) and WebSocket's own.
CLOSE_TOKEN, CLOSE_ADMISSION, CLOSE_POLICY = 4001, 4003, 4008
CLOSE_TOO_BIG, CLOSE_BAD_TEXT, CLOSE_ABNORMAL = 1009, 1007, 1006


class Pacer:
    """Waits before each frame until it fits the lane's message and byte budgets."""

    def __init__(self) -> None:
        self.messages = TokenBucket(PACE_MESSAGES_PER_S, PACE_MESSAGE_BURST)
        self.bytes = TokenBucket(PACE_BYTES_PER_S, PACE_BYTE_BURST)

    async def wait(self, size: int) -> None:
        # A frame larger than the burst is charged a full burst: the server's own byte
        # burst is twice ours, so it still never goes below empty.
        size = min(size, int(PACE_BYTE_BURST))
        for _ in range(1000):  # at most ~ a minute: 1000 x the longest wait below
            if self.bytes.take(size):
                break
            await asyncio.sleep(min(0.05, size / PACE_BYTES_PER_S))
        for _ in range(1000):
            if self.messages.take():
                return
            await asyncio.sleep(1 / PACE_MESSAGES_PER_S)


@dataclass
class Tally:
    """What was sent and what came back, over every lane."""

    sent: Counter[tuple[str, str]] = field(default_factory=Counter)  # (state, label)
    errors: Counter[str] = field(default_factory=Counter)  # error code (ref)
    byes: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)
    reconnects: Counter[str] = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)

    @property
    def messages(self) -> int:
        return sum(self.sent.values())

    def finding(self, text: str) -> None:
        log.error("finding: %s", text)
        if len(self.findings) < 200:
            self.findings.append(text)


# ------------------------------------------------------------------ the places lanes play


@dataclass
class Arena:
    """The server under test and the consultations lanes join.

    ``call`` is the protected call's consultation; ``protected`` its bots' participant ids,
    which no lane may name in ``remove``. ``full`` is a one-to-one consultation kept full;
    ``ended`` one that was ended (tokens for both are refused at join).
    """

    base_url: str
    secret: bytes
    call: str
    protected: set[str] = field(default_factory=set)
    # The kind every lane's own consultation is minted with (the call's included).
    kind: ConsultationKind = ConsultationKind.joint
    lobby: str = field(default_factory=new_consultation_id)
    full: str = field(default_factory=new_consultation_id)
    ended: str = field(default_factory=new_consultation_id)
    tally: Tally = field(default_factory=Tally)
    _keep: list[FuzzSocket] = field(default_factory=list)

    def token(
        self,
        consultation: str,
        role: Role,
        kind: ConsultationKind | None = None,
        **kw: Any,
    ) -> str:
        # Pre-admitted: the lanes hold the five states of the call; a patient or observer
        # token would otherwise wait in the waiting room (a state of its own).
        kw.setdefault("waiting_room", False)
        return mint(
            self.secret,
            consultation_id=consultation,
            kind=kind or self.kind,
            identity="fuzz-" + secrets.token_hex(6),
            name="Fuzz Lane",
            role=role,
            **kw,
        )

    def token_of_kind(self, kind: str) -> str:
        """The tokens a ``join`` frame can carry (strategies.TOKEN_KINDS)."""
        now = time.time()
        role = secrets.choice(list(Role))
        if kind == "valid":
            return self.token(self.lobby, role, ConsultationKind.joint)
        if kind == "expired":
            return self.token(self.lobby, role, ttl_s=60, now=now - 3600)
        if kind == "not_yet":
            return self.token(self.lobby, role, not_before=now + 3600)
        if kind == "foreign":
            return mint(
                secrets.token_bytes(32), consultation_id=self.lobby, kind="joint",
                identity="x", name="x", role=role,
            )  # fmt: skip
        if kind == "tampered":
            head, payload, signature = self.token(self.lobby, role).split(".")
            flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
            return f"{head}.{payload}.{flipped}"
        if kind == "truncated":
            return self.token(self.lobby, role)[:-7]
        if kind == "full":
            return self.token(self.full, Role.patient, ConsultationKind.one_to_one)
        if kind == "ended":
            return self.token(self.ended, role)
        raise ValueError(kind)

    async def prepare(self) -> None:
        """Fill ``full`` with two quiet participants and end ``ended``."""
        for role in (Role.doctor, Role.patient):
            sock = FuzzSocket(self, "setup")
            await sock.join(self.token(self.full, role, ConsultationKind.one_to_one), [])
            self._keep.append(sock)
        host = FuzzSocket(self, "setup")
        await host.join(self.token(self.ended, Role.doctor), [])
        await host.send_message({"type": "end"})
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            await host.closed.wait()
        await host.close()

    async def close(self) -> None:
        for sock in self._keep:
            await sock.close()


# ------------------------------------------------------------------ one socket


class FuzzSocket:
    """A WebSocket to /ws that checks every frame the server sends it.

    With ``answer`` set it answers every offer with a real RTCPeerConnection whose every
    m-line is inactive: negotiated, but no media flows to it.
    """

    _ping_ids = itertools.count(1)

    def __init__(self, arena: Arena, state: str, *, answer: bool = False) -> None:
        self.arena = arena
        self.state = state
        self.answer_offers = answer
        self.pacer = Pacer()
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.pc: RTCPeerConnection | None = None
        self.joined: p.Joined | None = None
        self.offer: p.Offer | None = None
        self.offer_at = 0.0
        self.answered = 0
        self.bye: p.Bye | None = None
        self.recording: p.RecordingState | None = None
        self.errors: list[p.Error] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        # Why the server may close this socket now (set when such a frame is sent).
        self.may_close: set[str] = set()
        self._pongs: deque[float] = deque(maxlen=64)
        self._arrived = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._answering: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def participant_id(self) -> str | None:
        return self.joined.participant.id if self.joined else None

    @property
    def is_open(self) -> bool:
        return self.ws is not None and not self.closed.is_set()

    async def open(self) -> None:
        self.http = aiohttp.ClientSession()
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            self.ws = await self.http.ws_connect(
                self.arena.base_url + "/ws", heartbeat=None, max_msg_size=1 << 20
            )
        self._reader = asyncio.create_task(self._read(), name="fuzz-reader")

    async def join(self, token: str, publish: list[str]) -> bool:
        """Open and join; True once ``joined`` came (and, if answering, the first offer
        was answered when one came within a moment)."""
        await self.open()
        await self.send_message({"type": "join", "token": token, "publish": publish})
        ok = await self.wait_until(lambda: self.joined is not None, CONNECT_TIMEOUT_S)
        return ok and self.joined is not None

    async def close(self) -> None:
        self._closing = True
        if self._answering is not None:
            self._answering.cancel()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()
        if self.http is not None:
            await self.http.close()
        self.closed.set()

    # -------------------------------------------------------------- sending

    async def send_wire(self, wire: Wire) -> bool:
        """Send one frame within the pace; False if the socket is gone."""
        if not self.is_open:
            return False
        assert self.ws is not None
        await self.pacer.wait(len(wire.data))
        if len(wire.data) > MAX_FRAME_BYTES:
            self.may_close.add("too_big")
        try:
            wire.data.decode("utf-8")
        except UnicodeDecodeError:
            if wire.text:
                self.may_close.add("bad_text")
        try:
            await self.ws.send_frame(
                wire.data, aiohttp.WSMsgType.TEXT if wire.text else aiohttp.WSMsgType.BINARY
            )
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            return False
        return True

    async def send_message(self, message: dict[str, Any]) -> bool:
        return await self.send_wire(Wire(True, json.dumps(message).encode()))

    async def sync(self, timeout: float = REPLY_TIMEOUT_S) -> bool:
        """A ping the server must answer after everything sent before it: True once its
        pong came, False if the socket closed first. A timeout is a finding."""
        ts = float(next(self._ping_ids))
        if not await self.send_message({"type": "ping", "ts": ts}):
            return False
        got = await self.wait_until(lambda: ts in self._pongs, timeout)
        if got:
            return True
        if self.is_open:
            self.arena.tally.finding(f"{self.state}: no pong within {timeout:.0f}s")
        return False

    async def wait_until(self, predicate: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.closed.is_set() or time.monotonic() > deadline:
                return bool(predicate())
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.25, max(0.0, deadline - time.monotonic()))):
                    await self._arrived.wait()
        return True

    # -------------------------------------------------------------- receiving

    async def _read(self) -> None:
        assert self.ws is not None
        tally = self.arena.tally
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    try:
                        message = p.parse_server(msg.data)
                    except ValidationError as exc:
                        tally.finding(
                            f"{self.state}: invalid server frame {msg.data[:300]!r}: {exc}"
                        )
                        continue
                    self._on_message(message)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    tally.finding(f"{self.state}: the server sent a binary frame")
                self._arrived.set()
        except Exception as exc:  # the reader must end, and say why
            tally.finding(f"{self.state}: reading failed: {type(exc).__name__}: {exc}")
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            self._arrived.set()

    def _on_message(self, message: p.ServerMessage) -> None:
        tally = self.arena.tally
        if isinstance(message, p.Pong):
            if message.ts is not None:
                self._pongs.append(message.ts)
        elif isinstance(message, p.Joined):
            self.joined = message
        elif isinstance(message, p.Offer):
            self.offer, self.offer_at = message, time.monotonic()
            if self.answer_offers and not self._closing:
                previous = self._answering
                self._answering = asyncio.create_task(self._answer(message, previous))
        elif isinstance(message, p.Error):
            self.errors.append(message)
            del self.errors[:-64]
            tally.errors[message.code + (f" ({message.ref})" if message.ref else "")] += 1
            if message.code == "internal":
                tally.finding(f"{self.state}: internal error: {message.message}")
            # Consent changes, media restarts, chat and video modes have limits of their
            # own, far below the socket's: refusals of those are the protocol working.
            if message.code == "rate_limited" and message.ref not in _OWN_LIMITS:
                tally.finding(f"{self.state}: rate_limited though paced within the budgets")
        elif isinstance(message, p.Bye):
            self.bye = message
            tally.byes[f"{message.reason} ({self.state})"] += 1
        elif isinstance(message, p.RecordingState):
            self.recording = message

    async def _answer(self, offer: p.Offer, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            with contextlib.suppress(BaseException):
                await previous
        try:
            if self.pc is None:
                self.pc = RTCPeerConnection()
            await self.pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
            for transceiver in self.pc.getTransceivers():
                transceiver.direction = "inactive"
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            sent = await self.send_message({"type": "answer", "sdp": self.pc.localDescription.sdp})
            if sent:
                self.answered += 1
        except (ConnectionError, aiohttp.ClientError):
            pass
        except Exception as exc:
            if self._closing or (self.pc is not None and self.pc.connectionState == "closed"):
                return  # our peer was closed meanwhile (by us, or by its own failure)
            # Our own peer (aiortc) could not answer the server's offer: an offer no peer
            # can take, or a fault of the peer's; worth knowing either way.
            self.arena.tally.finding(f"{self.state}: our peer could not answer: {exc!r}")

    # -------------------------------------------------------------- the verdict

    def check_closed(self) -> None:
        """The socket has closed: was it the protocol's doing? Else a finding."""
        tally = self.arena.tally
        code = self.close_code
        refused_join = self.joined is None and any(e.ref == "join" for e in self.errors)
        if self.bye is not None:
            why = f"bye {self.bye.reason}"
        elif refused_join and code in (CLOSE_TOKEN, CLOSE_ADMISSION, CLOSE_POLICY):
            why = f"join refused ({code})"
        elif code == CLOSE_TOO_BIG and "too_big" in self.may_close:
            why = "frame over the limit (1009)"
        elif code == CLOSE_BAD_TEXT and "bad_text" in self.may_close:
            why = "text frame not UTF-8 (1007)"
        elif code == CLOSE_ABNORMAL and self.may_close:
            # RFC 6455 7.1.7: a peer that receives an invalid frame may drop the connection
            # without a closing handshake.
            why = f"dropped after an invalid frame ({code})"
        else:
            last = self.errors[-1].code if self.errors else None
            tally.finding(
                f"{self.state}: the server closed the socket with {code} and no reason "
                f"(last error {last}, may_close {sorted(self.may_close)})"
            )
            why = f"unexplained {code}"
        tally.closes[why] += 1


# ------------------------------------------------------------------ lanes


class Lane:
    """Sends batches of frames in one state, and keeps its sockets in that state."""

    state: State

    def __init__(self, arena: Arena, consultation: str, exclude: Iterable[str] = ()) -> None:
        self.arena = arena
        self.consultation = consultation
        self.exclude = frozenset(exclude)
        self.sock: FuzzSocket | None = None
        # Why the state could not be reached last time, for the finding.
        self.why = ""

    def context(self) -> Context:
        sock = self.sock
        return Context(
            token=self.arena.token_of_kind,
            last_offer=sock.offer.sdp if sock and sock.offer else None,
            self_id=sock.participant_id if sock else None,
            others=self.others(),
        )

    def others(self) -> list[str]:
        return []

    async def ensure(self) -> bool:
        """Put the lane's socket(s) into the state; False if that could not be done now."""
        raise NotImplementedError

    async def run_batch(self, frames: list[Frame]) -> int:
        """Send ``frames`` in the lane's state and check the outcome; the number sent."""
        for _attempt in range(3):
            if await self.ensure():
                break
            await asyncio.sleep(0.5)
        else:
            self.arena.tally.finding(f"{self.state}: could not reach the state: {self.why}")
            return 0
        sent = 0
        for frame in frames:
            if not self.still_in_state():
                break
            if not await self.send(frame):
                break
            sent += 1
        await self.settle()
        return sent

    def still_in_state(self) -> bool:
        return self.sock is not None and self.sock.is_open

    async def send(self, frame: Frame) -> bool:
        assert self.sock is not None
        if not await self.sock.send_wire(render(frame, self.context())):
            return False
        self.arena.tally.sent[(self.state, frame.label)] += 1
        return True

    async def settle(self) -> None:
        """After a batch: the socket answers a ping in order, or closed for a reason."""
        sock = self.sock
        if sock is None:
            return
        if sock.is_open and await sock.sync():
            return
        await sock.wait_until(lambda: False, 2.0 if sock.is_open else 0)
        if sock.is_open:
            return  # the sync timed out: recorded, and the next ensure() starts afresh
        sock.check_closed()
        await self.drop(sock)

    async def drop(self, sock: FuzzSocket) -> None:
        await sock.close()
        if sock is self.sock:
            self.sock = None
        self.arena.tally.reconnects[self.state] += 1

    async def close(self) -> None:
        if self.sock is not None:
            await self.sock.close()
            self.sock = None


class BeforeJoinLane(Lane):
    """A fresh socket per batch: the batch's first frame is its first message."""

    state: State = "before_join"

    async def ensure(self) -> bool:
        self.sock = FuzzSocket(self.arena, self.state)
        try:
            await self.sock.open()
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            self.arena.tally.finding(f"before_join: could not open a socket: {exc!r}")
            await self.sock.close()
            return False
        return True

    def still_in_state(self) -> bool:
        return super().still_in_state() and self.sock is not None and self.sock.joined is None

    async def settle(self) -> None:
        sock = self.sock
        assert sock is not None
        # A ping as the next first message ends a socket still waiting for its join.
        if sock.is_open and sock.joined is None:
            await sock.send_message({"type": "ping", "ts": 0})
        await sock.wait_until(lambda: sock.joined is not None, REPLY_TIMEOUT_S)
        if sock.joined is not None and sock.is_open:
            # A valid join got in (to the lobby): it must work like any other, then go.
            if await sock.sync():
                await sock.send_message({"type": "leave"})
                await sock.wait_until(lambda: False, REPLY_TIMEOUT_S)
        if sock.is_open:
            self.arena.tally.finding("before_join: the socket neither joined nor closed")
        else:
            sock.check_closed()
        await sock.close()
        self.sock = None


class JoinedLane(Lane):
    """Joined, offer answered (all m-lines inactive): a participant in a settled call."""

    state: State = "joined"
    role: Role = Role.patient
    answer = True

    def __init__(self, *args: Any, role: Role = Role.patient, publish: list[str] | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.role = role
        self.publish = publish or []

    async def connect(self) -> bool:
        sock = FuzzSocket(self.arena, self.state, answer=self.answer)
        self.sock = sock
        try:
            joined = await sock.join(self.arena.token(self.consultation, self.role), self.publish)
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            joined = False
        if not joined:
            # A full consultation while a predecessor's teardown runs: try again later.
            self.why = f"join: {[e.code for e in sock.errors]}, closed {sock.close_code}"
            await self.drop(sock)
            return False
        return True

    async def ensure(self) -> bool:
        if self.sock is None or not self.sock.is_open:
            if not await self.connect():
                return False
        assert self.sock is not None
        # An offer on its way when joining: answered before the batch starts.
        await self.sock.wait_until(lambda: self.sock.offer is not None, 1.0)  # type: ignore[union-attr]
        return await self.sock.wait_until(
            lambda: self.sock.answered >= (1 if self.sock.offer else 0),
            REPLY_TIMEOUT_S,  # type: ignore[union-attr]
        )


class MidNegotiationLane(JoinedLane):
    """Joined, an offer outstanding and never answered (until the server gives up)."""

    state: State = "mid_negotiation"
    answer = False

    def __init__(self, *args: Any, answer_timeout_s: float = 15.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answer_timeout_s = answer_timeout_s
        self.accepted = False

    async def ensure(self) -> bool:
        sock = self.sock
        if sock is not None and sock.is_open and not self.still_in_state():
            if self.accepted:
                # A fuzzed answer fit the offer: this socket is negotiated now. Start over.
                await sock.send_message({"type": "leave"})
                limit = REPLY_TIMEOUT_S
            else:
                # The server drops a participant that does not answer in time: let it.
                limit = self.answer_timeout_s + REPLY_TIMEOUT_S
            await sock.wait_until(lambda: False, limit)
            if sock.is_open:
                self.arena.tally.finding(
                    "mid_negotiation: still open after "
                    + ("leave" if self.accepted else "the answer timeout")
                )
        if sock is not None and not sock.is_open:
            sock.check_closed()
            await self.drop(sock)
        elif sock is not None and not self.still_in_state():
            await self.drop(sock)
        if self.sock is None:
            self.accepted = False
            if not await self.connect():
                return False
        assert self.sock is not None
        return await self.sock.wait_until(lambda: self.sock.offer is not None, REPLY_TIMEOUT_S)  # type: ignore[union-attr]

    def still_in_state(self) -> bool:
        sock = self.sock
        return (
            sock is not None
            and sock.is_open
            and sock.offer is not None
            and not self.accepted
            # Leave the server time to drop us on its own clock, not mid-frame.
            and time.monotonic() - sock.offer_at < self.answer_timeout_s - 1.0
        )

    async def send(self, frame: Frame) -> bool:
        sock = self.sock
        assert sock is not None
        if not (frame.is_message and frame.label == "answer"):
            return await super().send(frame)
        # An answer may fit the offer: find out, with a ping either side of it.
        if not await sock.sync():
            return False
        before = len(sock.errors)
        if not await super().send(frame):
            return False
        if not await sock.sync():
            return True  # the socket closed: settle() judges why
        if not any(e.code in _ANSWER_REFUSALS for e in sock.errors[before:]):
            self.accepted = True
        return True


_ANSWER_REFUSALS = frozenset({"bad_sdp", "malformed", "too_large", "unexpected", "rate_limited",
                              "unknown_type"})  # fmt: skip


def _recording_of(sock: FuzzSocket) -> tuple[str, set[str]]:
    recording = sock.recording
    return (recording.state, set(recording.waitingFor)) if recording else ("idle", set())


class RecordingLane(Lane):
    """A doctor (the fuzzed socket) and a patient who holds the recording ``pending`` by
    not answering until the lane wants ``recording``. Anyone else present who is asked
    answers yes (the call's bots)."""

    def __init__(
        self,
        arena: Arena,
        consultation: str,
        state: State,
        exclude: Iterable[str] = (),
        fresh_consultation: bool = False,
    ) -> None:
        super().__init__(arena, consultation, exclude)
        self.state = state
        self.holdout: FuzzSocket | None = None
        # A side consultation that may be ended (by a fuzzed ``end``): then use a new one.
        self.fresh_consultation = fresh_consultation

    def others(self) -> list[str]:
        ids = [self.holdout.participant_id] if self.holdout and self.holdout.participant_id else []
        return [x for x in ids if x not in self.arena.protected]

    async def _join(self, role: Role) -> FuzzSocket | None:
        sock = FuzzSocket(self.arena, self.state, answer=True)
        try:
            ok = await sock.join(self.arena.token(self.consultation, role), [])
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            ok = False
        if ok:
            return sock
        self.why = f"{role} join: {[e.code for e in sock.errors]}, closed {sock.close_code}"
        ended = any(e.code in ("consultation_ended", "revoked_token") for e in sock.errors)
        await sock.close()
        if ended and self.fresh_consultation:
            self.consultation = new_consultation_id()
        return None

    async def _drop_dead(self) -> None:
        for name in ("sock", "holdout"):
            sock: FuzzSocket | None = getattr(self, name)
            if sock is not None and not sock.is_open:
                sock.check_closed()
                if sock.bye is not None and sock.bye.reason == "consultation_ended":
                    if self.fresh_consultation:
                        self.consultation = new_consultation_id()
                await self.drop(sock)
                setattr(self, name, None)

    async def ensure(self) -> bool:
        await self._drop_dead()
        if self.holdout is None:
            self.holdout = await self._join(Role.patient)
            if self.holdout is None:
                return False
        if self.sock is None:
            self.sock = await self._join(Role.doctor)
            if self.sock is None:
                return False
        doctor, holdout = self.sock, self.holdout
        want = "recording" if self.state == "recording" else "pending"
        steps: list[str] = []
        for _ in range(6):
            current, waiting = _recording_of(doctor)
            mine = {x for x in (doctor.participant_id, holdout.participant_id) if x in waiting}
            if current == want and (want == "recording" or holdout.participant_id in waiting):
                return True
            errors = len(doctor.errors), len(holdout.errors)
            if current == "pending" and want == "recording":
                # The hold-out, and the doctor too if it rejoined while pending (a late
                # joiner is asked as well).
                for sock in (holdout, doctor):
                    if sock.participant_id in waiting:
                        await sock.send_message({"type": "consent", "granted": True})
                action = f"consent x{len(mine)}"
            elif current in ("pending", "recording"):
                await doctor.send_message({"type": "record", "action": "stop"})
                action = "stop"
            else:
                await doctor.send_message({"type": "record", "action": "start"})
                action = "start"
            if not await doctor.sync() or not await holdout.sync():
                await self._drop_dead()
                return False
            seen = (current, waiting)
            await doctor.wait_until(lambda seen=seen: _recording_of(doctor) != seen, 2.0)
            replies = [e.code for e in doctor.errors[errors[0] :] + holdout.errors[errors[1] :]]
            steps.append(f"{current}({len(waiting)} waiting, {len(mine)} ours): {action} {replies}")
        self.why = "; ".join(steps)
        return False

    def still_in_state(self) -> bool:
        doctor = self.sock
        if doctor is None or not doctor.is_open or self.holdout is None:
            return False
        if not self.holdout.is_open or doctor.recording is None:
            return False
        return doctor.recording.state == ("recording" if self.state == "recording" else "pending")

    async def settle(self) -> None:
        await super().settle()
        holdout = self.holdout
        if holdout is not None and holdout.is_open and not await holdout.sync():
            pass  # closed: judged in the next ensure()

    async def close(self) -> None:
        await super().close()
        if self.holdout is not None:
            await self.holdout.close()
            self.holdout = None
