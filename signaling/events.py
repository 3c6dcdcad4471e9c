"""The server's typed event stream: what happened to a consultation, for systems outside it.

Producers (the Room, the recording's consent, the composer's completion, the clinic's
actions) ``publish`` one pydantic model per event; subscribers (the webhook outbox now; the
audit log and metrics may move onto it later) are called at once, on the publisher's
thread, and must only queue: a publish point may be on the loop that forwards media.

Events carry opaque ids only: the consultation id, a participant's per-session id, the
identity (the hospital's own opaque ``sub``), the role, a recording or opinion id. Never a
display name, a reason or any clinical text. Every event has a stable random ``id``
(receivers dedupe by it, since delivery is at least once) and the audit log's head at the
moment it was published, which anchors the audit chain outside the server.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from rooms.roles import Role
from signaling.tokens import Grant

log = logging.getLogger(__name__)


def new_event_id() -> str:
    # 128 random bits: the receiver's dedupe key, never reused.
    return "evt_" + secrets.token_hex(16)


def _now() -> datetime:
    return datetime.now(UTC)


class AuditHead(BaseModel):
    """The audit log's last entry when the event was published (``teleconsult audit
    verify`` checks the chain up to it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seq: int
    mac: str


class BaseEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(default_factory=new_event_id, description="Stable: dedupe by it.")
    at: datetime = Field(default_factory=_now, description="When it happened (UTC).")
    consultation: str = Field(description="The consultation id of the join tokens.")
    audit: AuditHead | None = Field(
        default=None, description="The audit log's head when the event was published."
    )


def who(participant_id: str, grant: Grant) -> dict[str, object]:
    """A participant event's fields from their session id and token (no display name)."""
    return {"participant": participant_id, "identity": grant.identity, "role": grant.role}


class ParticipantEvent(BaseEvent):
    participant: str = Field(description="The participant's per-session id.")
    identity: str = Field(description="The token's opaque `sub`: the hospital's own id.")
    role: Role


class ConsultationStarted(BaseEvent):
    """Someone was seated in an empty call: the call began (again, if it had emptied)."""

    type: Literal["consultation_started"] = "consultation_started"


class ConsultationEnded(BaseEvent):
    """The call's last participant left: ``ended`` if the consultation was ended (the
    host's ``end``, a revocation), ``everyone_left`` otherwise (it may start again)."""

    type: Literal["consultation_ended"] = "consultation_ended"
    reason: Literal["ended", "everyone_left"]


class ParticipantJoined(ParticipantEvent):
    """Seated in the call (directly, or on being admitted from the waiting room)."""

    type: Literal["participant_joined"] = "participant_joined"


class ParticipantAdmitted(ParticipantEvent):
    """Let in from the waiting room (after their ``participant_joined``)."""

    type: Literal["participant_admitted"] = "participant_admitted"
    by: str = Field(description="The admitting participant's identity.")


class ParticipantLeft(ParticipantEvent):
    """Out of the call, however the session ended."""

    type: Literal["participant_left"] = "participant_left"


class RecordingStarted(BaseEvent):
    """Everyone asked agreed; the recording runs."""

    type: Literal["recording_started"] = "recording_started"
    recording: str
    requested_by: str = Field(description="The requesting participant's id.")


class RecordingStopped(BaseEvent):
    """The recording stopped; its files are closed or being closed."""

    type: Literal["recording_stopped"] = "recording_stopped"
    recording: str
    reason: str = Field(
        description="stopped | everyone_left | disk_full | error | failed | ...: a code."
    )


class RecordingReady(BaseEvent):
    """A composed video of the recording exists (composing succeeded)."""

    type: Literal["recording_ready"] = "recording_ready"
    recording: str


class OpinionFiled(BaseEvent):
    """An expert filed a signed opinion (a new version supersedes the previous one)."""

    type: Literal["opinion_filed"] = "opinion_filed"
    opinion: str
    version: int
    author: str = Field(description="The expert's staff id.")


Event = Annotated[
    ConsultationStarted
    | ConsultationEnded
    | ParticipantJoined
    | ParticipantAdmitted
    | ParticipantLeft
    | RecordingStarted
    | RecordingStopped
    | RecordingReady
    | OpinionFiled,
    Field(discriminator="type"),
]
EVENT_TYPES: tuple[type[BaseEvent], ...] = (
    ConsultationStarted,
    ConsultationEnded,
    ParticipantJoined,
    ParticipantAdmitted,
    ParticipantLeft,
    RecordingStarted,
    RecordingStopped,
    RecordingReady,
    OpinionFiled,
)


def event_adapter() -> TypeAdapter[Event]:
    """Parses any event's JSON back into its model (by ``type``): for receivers and tests."""
    return TypeAdapter(Event)


Subscriber = Callable[[BaseEvent], None]


class EventStream:
    """One per server. ``head`` is the audit log's (seq, mac) now, stamped on each event."""

    def __init__(self, head: Callable[[], tuple[int, str]] | None = None) -> None:
        self._head = head
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, event: BaseEvent) -> None:
        """Hand ``event`` to every subscriber; a failing one is logged, never raised into
        the code that published (a join must not fail over a webhook)."""
        if self._head is not None and event.audit is None:
            seq, mac = self._head()
            event = event.model_copy(update={"audit": AuditHead(seq=seq, mac=mac)})
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                log.exception("an event subscriber failed on %s", event.id)
