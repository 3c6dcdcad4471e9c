"""The signaling protocol, version 1: every message typed and validated (pydantic).

One JSON object per WebSocket text frame, always with a ``type``. The browser client,
the kiosk, the bots and the benchmark all speak exactly this. docs/protocol.md is the
prose version; the two must agree.

The server is the only side that sends SDP offers: publishing and subscribing share one
RTCPeerConnection per Participant, and a single offerer means no glare.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024
MAX_SDP_CHARS = 60 * 1024

Kind = Literal["audio", "video"]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- client -> server


class Join(_Message):
    type: Literal["join"]
    v: Literal[1] = 1
    token: Annotated[str, Field(min_length=1, max_length=4096)]
    # What the client intends to publish; an observer must ask for neither.
    publish: list[Kind] = Field(default_factory=lambda: ["audio", "video"], max_length=2)


class Answer(_Message):
    type: Literal["answer"]
    sdp: Annotated[str, Field(min_length=1, max_length=MAX_SDP_CHARS)]


class Candidate(_Message):
    type: Literal["candidate"]
    # None means end-of-candidates.
    candidate: Annotated[str, Field(max_length=1024)] | None = None
    sdpMid: Annotated[str, Field(max_length=64)] | None = None
    sdpMLineIndex: Annotated[int, Field(ge=0, le=255)] | None = None


class Mute(_Message):
    type: Literal["mute"]
    kind: Kind
    muted: bool


class Leave(_Message):
    type: Literal["leave"]


class Ping(_Message):
    type: Literal["ping"]
    ts: float | None = None


class Record(_Message):
    """Ask to start or stop recording (needs the ``record`` permission)."""

    type: Literal["record"]
    action: Literal["start", "stop"]


class Consent(_Message):
    """This participant's answer to a consent request, or a later withdrawal."""

    type: Literal["consent"]
    granted: bool


ClientMessage = Annotated[
    Join | Answer | Candidate | Mute | Leave | Ping | Record | Consent,
    Field(discriminator="type"),
]
_client_adapter: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


# ---------------------------------------------------------------- server -> client


class ParticipantInfo(_Message):
    id: str
    name: str
    role: str
    audioMuted: bool = False
    videoMuted: bool = False


class ConsultationInfo(_Message):
    id: str
    kind: str


class IceServer(_Message):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class Joined(_Message):
    type: Literal["joined"] = "joined"
    v: int = PROTOCOL_VERSION
    participant: ParticipantInfo
    consultation: ConsultationInfo
    participants: list[ParticipantInfo]
    iceServers: list[IceServer]
    permissions: list[str]


class TrackSlot(_Message):
    """What one m-line of an offer carries, so the client can label what it receives."""

    mid: str
    kind: Kind
    # "publish": the client sends its own track on this m-line.
    # "consume": the server sends another participant's track on it.
    # "idle": an m-line kept for reuse, carrying nothing right now.
    role: Literal["publish", "consume", "idle"]
    participantId: str | None = None
    producerId: str | None = None


class Offer(_Message):
    type: Literal["offer"] = "offer"
    sdp: str
    tracks: list[TrackSlot]


class ParticipantJoined(_Message):
    type: Literal["participant_joined"] = "participant_joined"
    participant: ParticipantInfo


class ParticipantLeft(_Message):
    type: Literal["participant_left"] = "participant_left"
    participantId: str


class TrackPublished(_Message):
    type: Literal["track_published"] = "track_published"
    participantId: str
    producerId: str
    kind: Kind


class TrackUnpublished(_Message):
    type: Literal["track_unpublished"] = "track_unpublished"
    participantId: str
    producerId: str
    kind: Kind


class MuteChanged(_Message):
    type: Literal["mute_changed"] = "mute_changed"
    participantId: str
    kind: Kind
    muted: bool


class ConsentRequest(_Message):
    """Sent to each participant present when recording is asked for, and to late joiners."""

    type: Literal["consent_request"] = "consent_request"
    recordingId: str
    requestedBy: str


class RecordingState(_Message):
    """Broadcast on every change; clients show REC while ``state`` is ``recording``."""

    type: Literal["recording"] = "recording"
    state: Literal["idle", "pending", "recording", "stopped"]
    recordingId: str | None = None
    # pending: who has not answered yet; recording: who is left out (no consent).
    waitingFor: list[str] = Field(default_factory=list)
    excluded: list[str] = Field(default_factory=list)
    # Why it ended: stopped | everyone_left | declined | consent_required | failed |
    # disk_full | error. A fixed code, so clients can translate it.
    reason: str | None = None
    # Who stopped it (reason "stopped") or declined (reason "declined").
    by: str | None = None
    # When recording started, in seconds since the epoch (late joiners' REC timers).
    startedAt: float | None = None


class Pong(_Message):
    type: Literal["pong"] = "pong"
    ts: float | None = None


class Bye(_Message):
    """The server ends this participant's session; the WebSocket closes after it."""

    type: Literal["bye"] = "bye"
    reason: str


ErrorCode = Literal[
    "malformed",  # not JSON, not an object, or fails validation
    "unknown_type",
    "too_large",
    "rate_limited",
    "not_joined",
    "already_joined",
    "invalid_token",
    "expired_token",
    "forbidden",
    "consultation_full",
    "consultation_ended",
    "bad_sdp",
    "bad_candidate",
    "unexpected",  # e.g. an answer when no offer is outstanding
    "consent_required",  # recording refused: not everyone present has consented
    "consent_refused",  # a participant declined; the recording request is cancelled
    "recording_failed",
    "internal",
]


class Error(_Message):
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    # The type of the client message that caused it, when known.
    ref: str | None = None
    # The participant it is about, when there is one (e.g. who declined recording).
    participantId: str | None = None


ServerMessage = Annotated[
    Joined
    | Offer
    | ParticipantJoined
    | ParticipantLeft
    | TrackPublished
    | TrackUnpublished
    | MuteChanged
    | ConsentRequest
    | RecordingState
    | Pong
    | Bye
    | Error,
    Field(discriminator="type"),
]
_server_adapter: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)

CLIENT_TYPES = frozenset(
    ["join", "answer", "candidate", "mute", "leave", "ping", "record", "consent"]
)


class ProtocolError(Exception):
    """A client message that cannot be accepted; becomes an Error message, never a crash."""

    def __init__(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.ref = ref

    def to_message(self) -> Error:
        return Error(code=self.code, message=self.message, ref=self.ref)


def parse_client(raw: str | bytes) -> ClientMessage:
    """Validate one client frame; raise ProtocolError with a precise code otherwise."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ProtocolError("too_large", f"message exceeds {MAX_MESSAGE_BYTES} bytes")
    try:
        return _client_adapter.validate_json(raw)
    except ValidationError as exc:
        ref = _peek_type(exc)
        if ref is not None and ref not in CLIENT_TYPES:
            raise ProtocolError("unknown_type", f"unknown message type {ref!r}") from None
        raise ProtocolError("malformed", _describe(exc), ref) from None


def parse_server(raw: str | bytes) -> ServerMessage:
    """Used by bots and tests: the server's frames are validated the same way."""
    return _server_adapter.validate_json(raw)


def dump(message: BaseModel) -> str:
    return message.model_dump_json(exclude_none=True)


def _peek_type(exc: ValidationError) -> str | None:
    """The message type the client meant, if it named one: the union's tag."""
    for err in exc.errors():
        if err["type"] == "union_tag_invalid":
            tag = err.get("ctx", {}).get("tag")
            return str(tag) if tag is not None else None
        loc = err["loc"]
        if loc and isinstance(loc[0], str) and loc[0] in CLIENT_TYPES:
            return loc[0]
    return None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
