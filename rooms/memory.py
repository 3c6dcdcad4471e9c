"""RoomStore for one process: the embedded default, nothing to install."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from rooms.consultation import (
    PARTICIPANT_CAP,
    Consultation,
    ConsultationKind,
    Participant,
    validate_consultation_id,
)
from rooms.errors import ConsultationEnded, ConsultationFull, KindMismatch, UnknownParticipant
from rooms.store import MediaKind

# How long an ended consultation is remembered. It must outlive any token minted for it,
# or such a token could reopen the consultation: the CLI's invites last 8 hours.
DEFAULT_TOMBSTONE_TTL_S = 7 * 24 * 3600.0


@dataclass
class _Room:
    consultation: Consultation
    # dict keeps insertion order, which is the join order.
    participants: dict[str, Participant] = field(default_factory=dict)
    ended_at: float | None = None


class InMemoryRoomStore:
    """Implements ``rooms.store.RoomStore``; see there for the contract."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        tombstone_ttl_s: float = DEFAULT_TOMBSTONE_TTL_S,
    ) -> None:
        self._clock = clock
        self._tombstone_ttl_s = tombstone_ttl_s
        self._rooms: dict[str, _Room] = {}
        # One lock for the whole store. The critical sections below never await, so today
        # the event loop alone serialises them; the lock keeps check-then-act atomic the day
        # one does (an audit write, a hook), which is exactly when the last-seat race appears.
        self._lock = asyncio.Lock()

    async def join(
        self, consultation_id: str, kind: ConsultationKind, participant: Participant
    ) -> tuple[Consultation, Participant | None]:
        validate_consultation_id(consultation_id)
        kind = ConsultationKind(kind)
        async with self._lock:
            self._purge_tombstones()
            room = self._rooms.get(consultation_id)
            if room is None:
                room = _Room(Consultation(consultation_id, kind, created_at=self._clock()))
                self._rooms[consultation_id] = room
            consultation = room.consultation
            if consultation.ended:
                raise ConsultationEnded("this consultation has ended")
            if consultation.kind != kind:
                raise KindMismatch("token is for a different kind of consultation")
            replaced = next(
                (p for p in room.participants.values() if p.identity == participant.identity),
                None,
            )
            others = len(room.participants) - (replaced is not None)
            if others >= PARTICIPANT_CAP[kind]:
                raise ConsultationFull(f"consultation is full ({PARTICIPANT_CAP[kind]})")
            if replaced is not None:
                del room.participants[replaced.id]
            room.participants[participant.id] = participant
            return consultation, replaced

    async def leave(self, consultation_id: str, participant_id: str) -> Participant | None:
        async with self._lock:
            room = self._rooms.get(consultation_id)
            if room is None:
                return None
            gone = room.participants.pop(participant_id, None)
            if not room.participants and not room.consultation.ended:
                del self._rooms[consultation_id]
            return gone

    async def participants(self, consultation_id: str) -> list[Participant]:
        async with self._lock:
            room = self._rooms.get(consultation_id)
            return list(room.participants.values()) if room else []

    async def get(self, consultation_id: str) -> Consultation | None:
        async with self._lock:
            self._purge_tombstones()
            room = self._rooms.get(consultation_id)
            return room.consultation if room else None

    async def set_muted(
        self, consultation_id: str, participant_id: str, kind: MediaKind, muted: bool
    ) -> Participant:
        if kind not in ("audio", "video"):
            raise ValueError("kind must be 'audio' or 'video'")
        async with self._lock:
            room = self._rooms.get(consultation_id)
            current = room.participants.get(participant_id) if room else None
            if room is None or current is None:
                raise UnknownParticipant("no such participant in this consultation")
            updated = replace(current, **{f"{kind}_muted": muted})
            room.participants[participant_id] = updated
            return updated

    async def end(self, consultation_id: str) -> list[Participant]:
        async with self._lock:
            room = self._rooms.get(consultation_id)
            if room is None or room.consultation.ended:
                return []
            room.consultation = replace(room.consultation, ended=True)
            room.ended_at = self._clock()
            present = list(room.participants.values())
            room.participants.clear()
            return present

    async def consultations(self) -> list[Consultation]:
        async with self._lock:
            self._purge_tombstones()
            return [room.consultation for room in self._rooms.values()]

    def _purge_tombstones(self) -> None:
        cutoff = self._clock() - self._tombstone_ttl_s
        stale = [
            cid
            for cid, room in self._rooms.items()
            if room.ended_at is not None and room.ended_at < cutoff
        ]
        for cid in stale:
            del self._rooms[cid]
