"""The signaling protocol, version 1: every message typed and validated (pydantic).

One JSON object per WebSocket text frame, always with a ``type``. The browser client,
the kiosk, the bots and the benchmark all speak exactly this. docs/protocol.md is the
prose version; the two must agree.

The server is the only side that sends SDP offers: publishing and subscribing share one
RTCPeerConnection per Participant, and a single offerer means no glare.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024
MAX_SDP_CHARS = 60 * 1024
# A host's short note to someone they turn away ("please call the clinic at 3").
MAX_NOTE_CHARS = 200
# A chat message, after trimming: a paragraph, not a document (documents are shared as
# images or attached to the consultation).
MAX_CHAT_CHARS = 2000
# History a participant gets on joining is sent in pages of at most this many messages.
CHAT_PAGE = 50

Kind = Literal["audio", "video"]
# What a track is; the extra video sources are added and removed during the call.
Source = Literal["microphone", "camera", "screen", "camera2"]
ExtraSource = Literal["screen", "camera2"]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- client -> server


class Join(_Message):
    type: Literal["join"]
    v: Literal[1] = 1
    token: Annotated[str, Field(min_length=1, max_length=4096)]
    # What the client intends to publish; an observer must ask for neither.
    publish: list[Kind] = Field(default_factory=lambda: ["audio", "video"], max_length=2)
    # The video codecs the client can both send and receive, as named by WebRTC ("VP8",
    # "H264", ...; others are ignored). Absent: it can do every codec the server forwards.
    videoCodecs: list[Annotated[str, Field(min_length=1, max_length=32)]] | None = Field(
        default=None, max_length=32
    )
    # The resumeToken of a session whose socket dropped: the same session goes on (its
    # media connection untouched) if it is still held; otherwise this is a new join.
    resume: Annotated[str, Field(min_length=1, max_length=64)] | None = None


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
    # Which extra video Producer (``screen``, ``camera2``); absent: the main track of kind.
    source: ExtraSource | None = None


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
    """This participant's answer to a consent request, or a later withdrawal.

    Only from someone asked (pending) or who publishes (recording), else ``forbidden``;
    4 in a row, then one every 15 s, else ``rate_limited`` (both with ref ``consent``).
    """

    type: Literal["consent"]
    granted: bool


class Remove(_Message):
    """Remove a participant (needs ``remove_participant``): their link stops working."""

    type: Literal["remove"]
    participantId: Annotated[str, Field(min_length=1, max_length=64)]


class End(_Message):
    """End the consultation for everyone (needs ``end_consultation``); no link reopens it."""

    type: Literal["end"]


class MediaRestart(_Message):
    """This client's media connection failed (a network switch, Wi-Fi to 4G): a new one,
    the signaling session going on. Answered by `media_reset` and a new `offer`."""

    type: Literal["media_restart"]


ParticipantId = Annotated[str, Field(min_length=1, max_length=64)]


class Admit(_Message):
    """Let one person in from the waiting room (needs ``admit``)."""

    type: Literal["admit"]
    participantId: ParticipantId


class AdmitAll(_Message):
    type: Literal["admit_all"]


class SendAway(_Message):
    """Turn someone away from the waiting room, with a message they are shown."""

    type: Literal["send_away"]
    participantId: ParticipantId
    message: Annotated[str, Field(max_length=MAX_NOTE_CHARS)] | None = None


def _chat_text(value: str) -> str:
    text = value.strip()
    if not text:
        raise ValueError("a chat message needs some text")
    if len(text) > MAX_CHAT_CHARS:
        raise ValueError(f"a chat message is at most {MAX_CHAT_CHARS} characters")
    return text


class Chat(_Message):
    """A text message to everyone in the call (not the waiting room). Trimmed; at most
    2,000 characters; a few a second per person (``rate_limited``, ref ``chat``)."""

    type: Literal["chat"]
    # Bounded before trimming too: whitespace is not free to parse.
    text: Annotated[str, Field(max_length=2 * MAX_CHAT_CHARS), AfterValidator(_chat_text)]


ImageId = Annotated[str, Field(pattern=r"^img_[A-Za-z0-9_-]{8,40}$")]
Preset = Annotated[str, Field(pattern=r"^[a-z_]{1,24}$")]
Unit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class Share(_Message):
    """Show everyone an image uploaded to this consultation (needs ``share_images``);
    the sharer becomes the presenter, whose pointer the others see."""

    type: Literal["share"]
    imageId: ImageId
    # For a DICOM image: the window to open it with (each viewer may switch).
    preset: Preset | None = None


class Unshare(_Message):
    """Close the shared image for everyone (the presenter, or anyone with ``admit``: the
    doctor and nurse who run the call)."""

    type: Literal["unshare"]


class Pointer(_Message):
    """The presenter's pointer on the shared image, as a fraction of its width and height
    (``x``/``y`` absent: hidden). Pages send at most ~15 a second; beyond 20 a second the
    server drops them."""

    type: Literal["pointer"]
    x: Unit | None = None
    y: Unit | None = None


class PublishExtra(_Message):
    """Publish another video track besides the camera: the screen (``screen``, needs
    ``share_screen``) or a second camera (``camera2``, needs ``publish``). A new ``offer``
    follows with a ``publish`` m-line of that source; at most two at once."""

    type: Literal["publish_extra"]
    source: ExtraSource


class UnpublishExtra(_Message):
    """Stop that extra video track; everyone is told (``track_unpublished``)."""

    type: Literal["unpublish_extra"]
    source: ExtraSource


VideoMode = Literal["all", "audio_only", "speaker"]


class VideoPolicy(_Message):
    """What video this participant receives: everyone's (``all``), none (``audio_only``)
    or only the active speaker's (``speaker``). Enforced by the media Worker."""

    type: Literal["video_policy"]
    mode: VideoMode


class RaiseHand(_Message):
    """Ward round: ask the attending for the floor (needs ``publish``)."""

    type: Literal["raise_hand"]


class LowerHand(_Message):
    type: Literal["lower_hand"]


class GiveFloor(_Message):
    """Ward round (needs ``floor``): this participant's audio is forwarded again; whoever
    held the floor before is paused."""

    type: Literal["give_floor"]
    participantId: ParticipantId


class TakeFloor(_Message):
    """Ward round (needs ``floor``): this participant's audio is paused by the server."""

    type: Literal["take_floor"]
    participantId: ParticipantId


class MuteAllButMe(_Message):
    """Ward round (needs ``floor``): every other publisher's audio is paused."""

    type: Literal["mute_all_but_me"]


class SetBedside(_Message):
    """Ward round (needs ``floor``): whose video is the bedside's, shown large to everyone
    (absent: the server's choice, the first nurse, else the first doctor)."""

    type: Literal["set_bedside"]
    participantId: ParticipantId | None = None


Step = Annotated[int, Field(ge=-5, le=5)]


class CameraCaps(_Message):
    """Ward round, from the bedside page: which of its camera's pan, tilt and zoom it can
    move (``MediaStreamTrack.getCapabilities()``); sent after joining and on a camera
    switch. Nobody may ask for a move it does not have."""

    type: Literal["camera_caps"]
    pan: bool = False
    tilt: bool = False
    zoom: bool = False


class CameraControl(_Message):
    """Ward round: move the bedside camera, in steps (-5 to 5) along each axis given. Only
    from whoever has the floor or the attending (``floor``); the bedside page may refuse."""

    type: Literal["camera_control"]
    participantId: ParticipantId
    pan: Step | None = None
    tilt: Step | None = None
    zoom: Step | None = None


class CameraResult(_Message):
    """The bedside page's answer to a ``camera_request``: applied, or why not."""

    type: Literal["camera_result"]
    requestId: Annotated[str, Field(pattern=r"^cam_[0-9a-f]{8,32}$")]
    applied: bool
    reason: Literal["refused", "unsupported", "failed"] | None = None


class AgendaNext(_Message):
    """Ward round (needs ``floor``): on to the next bed of the agenda (from the last: the
    round is done)."""

    type: Literal["agenda_next"]


class AgendaGoto(_Message):
    """Ward round (needs ``floor``): to this bed of the agenda."""

    type: Literal["agenda_goto"]
    bedId: Annotated[str, Field(pattern=r"^bed_[0-9a-f]{16}$")]


ClientMessage = Annotated[
    Join
    | Answer
    | Candidate
    | Mute
    | Leave
    | Ping
    | Record
    | Consent
    | Remove
    | End
    | MediaRestart
    | Admit
    | AdmitAll
    | SendAway
    | Chat
    | Share
    | Unshare
    | Pointer
    | VideoPolicy
    | RaiseHand
    | LowerHand
    | GiveFloor
    | TakeFloor
    | MuteAllButMe
    | SetBedside
    | CameraCaps
    | CameraControl
    | CameraResult
    | AgendaNext
    | AgendaGoto
    | PublishExtra
    | UnpublishExtra,
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
    # Present this in `join` (`resume`) after the socket drops, to go on with this session.
    resumeToken: str | None = None


class Resumed(_Message):
    """The answer to a `join` with `resume`: the same session goes on. Messages sent while
    the socket was down follow, in order; the media connection was never touched."""

    type: Literal["resumed"] = "resumed"


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
    # What the track is (publish and consume): "microphone", "camera", or an extra video's
    # "screen" / "camera2". A "publish" m-line of source "screen" wants the screen track.
    source: Source | None = None


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
    # "screen" is shown large to everyone; "camera2" beside the sender's camera.
    source: Source = "camera"


class TrackUnpublished(_Message):
    type: Literal["track_unpublished"] = "track_unpublished"
    participantId: str
    producerId: str
    kind: Kind
    source: Source = "camera"


class MuteChanged(_Message):
    type: Literal["mute_changed"] = "mute_changed"
    participantId: str
    kind: Kind
    muted: bool
    source: ExtraSource | None = None


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
    """The server ends this participant's session; the WebSocket closes after it.

    ``reason`` is free text except for fixed codes a page translates: ``left``,
    ``removed`` (by the host, or the link was revoked), ``consultation_ended``,
    ``sent_away`` (from the waiting room; ``message`` is the host's note, if any).
    """

    type: Literal["bye"] = "bye"
    reason: str
    message: str | None = None


class MediaReset(_Message):
    """The media of this consultation moved (its Worker died): close the RTCPeerConnection,
    make a new one; a new ``offer`` follows. The signaling session goes on."""

    type: Literal["media_reset"] = "media_reset"
    reason: str


class Waiting(_Message):
    """To someone in the waiting room: they are not in the call yet. Sent on arrival and
    whenever their place changes; ``joined`` follows when they are let in."""

    type: Literal["waiting"] = "waiting"
    position: int  # 1 = next
    total: int
    resumeToken: str | None = None


class WaitingInfo(_Message):
    id: str
    name: str
    role: str
    since: float  # epoch seconds


class WaitingRoom(_Message):
    """To those who may admit (``admit``): who waits, in order of arrival."""

    type: Literal["waiting_room"] = "waiting_room"
    waiting: list[WaitingInfo]


class ChatMessage(_Message):
    """One chat message, to everyone in the call (the sender too: their copy is the one
    stored). ``name`` is the sender's display name; pages show every field as text."""

    type: Literal["chat"] = "chat"
    id: str
    participantId: str
    name: str
    role: str
    text: str
    at: float  # epoch seconds


class ChatEntry(_Message):
    id: str
    participantId: str
    name: str
    role: str
    text: str
    at: float


class ChatHistory(_Message):
    """The consultation's chat so far (the newest 200), oldest first, in pages of at most
    50, on joining and after a reload; ``more`` says another page follows."""

    type: Literal["chat_history"] = "chat_history"
    messages: list[ChatEntry]
    more: bool = False


class ImageInfo(_Message):
    """Technical tags of a shared DICOM image; nothing that names the patient."""

    modality: str | None = None
    bodyPart: str | None = None
    sliceThickness: float | None = None
    frames: int | None = None


class Shared(_Message):
    """What everyone in the call is shown: an image to fetch over HTTP (never in this
    message), its presets (DICOM windows; a photo has ``original`` only) and the presenter."""

    type: Literal["share"] = "share"
    imageId: str
    by: str  # the presenter's participant id
    kind: Literal["photo", "dicom"]
    mediaType: str
    width: int
    height: int
    presets: list[str]
    preset: str
    info: ImageInfo | None = None


class ShareEnded(_Message):
    type: Literal["share_ended"] = "share_ended"
    imageId: str
    by: str | None = None  # who closed it; absent when the presenter left


class PointerMoved(_Message):
    """The presenter's pointer (fractions of the image; absent: hidden), to the others."""

    type: Literal["pointer"] = "pointer"
    participantId: str
    x: float | None = None
    y: float | None = None


class VideoPolicyState(_Message):
    """This participant's incoming video, as the Worker enforces it; in ``speaker`` mode
    ``showing`` is whose video is forwarded (absent: nobody's yet). Sent on every change."""

    type: Literal["video_policy"] = "video_policy"
    mode: VideoMode
    showing: str | None = None


VideoRateMode = Literal["full", "reduced", "stills"]


class VideoRate(_Message):
    """The video this participant receives from ``participantId`` was fitted to their link:
    ``reduced`` is fewer frames per second (temporal layers dropped), ``stills`` a fresh
    picture every few seconds with sound as before, ``full`` back to everything."""

    type: Literal["video_rate"] = "video_rate"
    participantId: str
    mode: VideoRateMode


class FloorState(_Message):
    """Ward round, to everyone on every change and on joining: who has the floor (their
    audio is forwarded; absent: nobody of those held) and the raised hands, oldest first."""

    type: Literal["floor"] = "floor"
    holder: str | None = None
    hands: list[str] = Field(default_factory=list)
    # Whose audio is held by the floor (they cannot unmute themselves).
    held: list[str] = Field(default_factory=list)
    # The bedside device (pages show its video large): marked by the attending, else the
    # first nurse, else the first doctor.
    bedside: str | None = None


class BedInfo(_Message):
    """A bed of the agenda. ``patientRef`` and ``note`` only to the clinicians (doctor,
    nurse, expert); observers and patients see the label."""

    id: str
    label: str
    patientRef: str | None = None
    note: str | None = None


class CameraRequest(_Message):
    """To the bedside: someone asks to move its camera. Answer with ``camera_result``."""

    type: Literal["camera_request"] = "camera_request"
    requestId: str
    participantId: str  # who asks
    pan: int | None = None
    tilt: int | None = None
    zoom: int | None = None


class CameraAnswer(_Message):
    """To whoever asked: what the bedside did with their ``camera_control``."""

    type: Literal["camera_result"] = "camera_result"
    requestId: str
    participantId: str  # the bedside
    applied: bool
    reason: str | None = None


class AgendaState(_Message):
    """Ward round, to everyone on every change, on joining and on resuming: the current bed
    (absent: not started, or done), the next one, the current bed's place (1-based)."""

    type: Literal["agenda"] = "agenda"
    current: BedInfo | None = None
    next: BedInfo | None = None
    position: int | None = None
    total: int = 0
    done: bool = False


ErrorCode = Literal[
    "malformed",  # not JSON, not an object, or fails validation
    "unknown_type",
    "too_large",
    "rate_limited",
    "not_joined",
    "already_joined",
    "invalid_token",
    "expired_token",
    "revoked_token",  # the consultation ended, or this person or link was removed
    "forbidden",
    "not_admitted",  # in the waiting room: only ping and leave until let in
    "waiting_room_full",
    "consultation_full",
    "consultation_ended",
    "bad_sdp",
    "bad_candidate",
    "unexpected",  # e.g. an answer when no offer is outstanding
    "consent_required",  # recording refused: not everyone present has consented
    "consent_refused",  # a participant declined; the recording request is cancelled
    "recording_failed",
    "worker_unavailable",  # no media Worker answered in time: try again
    # The node holding the consultation (or Redis, which says which one it is) did not
    # answer in time: try again.
    "node_unavailable",
    # Not a refusal: the participant goes on with audio only (its client cannot use the
    # consultation's video codec, or its answer rejected a video m-line).
    "video_unavailable",
    # A camera-control command to a device that cannot move that way: nothing applied.
    "camera_unsupported",
    # publish_extra past the limit of extra video tracks (two at once).
    "too_many_producers",
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
    | Resumed
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
    | Waiting
    | WaitingRoom
    | MediaReset
    | ChatMessage
    | ChatHistory
    | Shared
    | ShareEnded
    | PointerMoved
    | VideoPolicyState
    | VideoRate
    | FloorState
    | AgendaState
    | CameraRequest
    | CameraAnswer
    | Error,
    Field(discriminator="type"),
]
_server_adapter: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)

CLIENT_TYPES = frozenset(
    [
        "join",
        "answer",
        "candidate",
        "mute",
        "leave",
        "ping",
        "record",
        "consent",
        "remove",
        "end",
        "media_restart",
        "admit",
        "admit_all",
        "send_away",
        "chat",
        "share",
        "unshare",
        "pointer",
        "video_policy",
        "raise_hand",
        "lower_hand",
        "give_floor",
        "take_floor",
        "mute_all_but_me",
        "set_bedside",
        "camera_caps",
        "camera_control",
        "camera_result",
        "agenda_next",
        "agenda_goto",
        "publish_extra",
        "unpublish_extra",
    ]
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
    # Bytes, not characters: a str of 64 Ki characters can be 256 KiB of UTF-8.
    size = len(raw) if isinstance(raw, bytes) or raw.isascii() else len(raw.encode())
    if size > MAX_MESSAGE_BYTES:
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
