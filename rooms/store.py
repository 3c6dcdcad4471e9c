"""The RoomStore seam: who is in which consultation.

One interface, two implementations chosen at start-up (LiveKit's pkg/routing pattern):
``rooms.memory.InMemoryRoomStore`` for one process, a Redis one for many signaling nodes.
Every method is async so the Redis implementation fits without changing callers.

Contract shared by every implementation:

* ``join`` creates the consultation on first join, with the kind the joiner's token carries;
  a later joiner's kind must match (``KindMismatch``). Joining an ended consultation raises
  ``ConsultationEnded``; joining past ``PARTICIPANT_CAP[kind]`` raises ``ConsultationFull``.
  A participant with the same ``identity`` already present is replaced (the same person
  reconnecting from a new socket or device) and returned, so the caller can close the old
  session; the replaced one does not count against the cap. The newcomer goes to the end of
  the join order.
* ``leave`` is idempotent. When the last participant leaves a consultation that was not
  ended, the consultation is forgotten: it holds no state worth keeping, and the next valid
  token simply opens it again. An ended consultation is kept (as a tombstone, empty) so that
  tokens still unexpired cannot reopen it.
* ``end`` marks the consultation ended, removes everyone and returns who was in it. It is
  idempotent (a second call returns ``[]``) and does nothing for an unknown consultation.
* Reads return copies: callers may keep them, the store never mutates what it returned.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from rooms.consultation import Consultation, ConsultationKind, Participant

MediaKind = Literal["audio", "video"]


@runtime_checkable
class RoomStore(Protocol):
    async def join(
        self, consultation_id: str, kind: ConsultationKind, participant: Participant
    ) -> tuple[Consultation, Participant | None]:
        """Add ``participant``; return the consultation and whoever it replaced, if anyone."""
        ...

    async def leave(self, consultation_id: str, participant_id: str) -> Participant | None:
        """Remove a participant; return it, or None if it was not there."""
        ...

    async def participants(self, consultation_id: str) -> list[Participant]:
        """Everyone present, in join order; ``[]`` for an unknown consultation."""
        ...

    async def get(self, consultation_id: str) -> Consultation | None: ...

    async def set_muted(
        self, consultation_id: str, participant_id: str, kind: MediaKind, muted: bool
    ) -> Participant:
        """Record a mute change and return the updated participant (UnknownParticipant)."""
        ...

    async def end(self, consultation_id: str) -> list[Participant]:
        """Mark ended, remove and return everyone who was in it."""
        ...

    async def consultations(self) -> list[Consultation]:
        """Every consultation known, ended ones included (their ``ended`` is True)."""
        ...
