"""Rooms: which Room holds which consultation on this node, and the Worker's events routed
to them (it implements ``media.client.WorkerEvents``).

A Room is made when its first participant arrives and dropped when its last one has left
and no join is under way, so an idle server holds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from media.client import ProducerInfo, QualitySample, SlotDescription, WorkerClient
from media.config import MediaConfig
from rooms.store import RoomStore
from signaling.audit.log import AuditLog
from signaling.events import EventStream
from signaling.room.members import Member
from signaling.room.revocation import RevocationGuard
from signaling.room.room import Room
from signaling.sharing.store import Sharing

# (consultation id, samples with their participant's role): where the Workers' quality
# samples go once a Room has named the roles (signaling/quality.py).
QualitySink = Callable[[str, list[tuple[QualitySample, str]]], None]

log = logging.getLogger(__name__)


class Rooms:
    def __init__(
        self,
        *,
        store: RoomStore,
        audit: AuditLog,
        revocation: RevocationGuard,
        media: MediaConfig,
        resume_grace_s: float = 20.0,
        events: EventStream,
        on_joined: Callable[[float], None] | None = None,
        quality: QualitySink | None = None,
    ) -> None:
        """``on_joined``: each participant's join time in seconds (the /metrics histogram);
        ``quality``: where the Workers' quality samples go."""
        self._rooms: dict[str, Room] = {}
        self._resume_grace_s = resume_grace_s
        self._store = store
        self._audit = audit
        self._revocation = revocation
        self._media = media
        self._events = events
        self._on_joined = on_joined
        self._quality = quality
        self._worker: WorkerClient | None = None
        # Where chat and shared images are kept; set once the records are (use_sharing).
        self._sharing: Sharing | None = None
        # Told the consultation id of each Room dropped (with several nodes: its claim goes).
        self.on_released: Callable[[str], None] | None = None

    def bind(self, worker: WorkerClient) -> None:
        """The Worker is made with these Rooms as its events; then it is handed back here."""
        self._worker = worker

    def use_sharing(self, sharing: Sharing) -> None:
        """Keep chat and shared images with the consultations' records from now on."""
        self._sharing = sharing

    @property
    def worker(self) -> WorkerClient:
        assert self._worker is not None, "Rooms.bind(worker) first"
        return self._worker

    def get(self, consultation_id: str) -> Room | None:
        return self._rooms.get(consultation_id)

    def open(self, consultation_id: str) -> Room:
        room = self._rooms.get(consultation_id)
        if room is None:
            room = self._rooms[consultation_id] = Room(
                consultation_id,
                store=self._store,
                worker=self.worker,
                audit=self._audit,
                revocation=self._revocation,
                media=self._media,
                on_empty=self.release,
                resume_grace_s=self._resume_grace_s,
                events=self._events,
                on_joined=self._on_joined,
                sharing=self._sharing,
            )
        return room

    def release(self, room: Room) -> None:
        """Drop ``room`` if nobody is in it or on the way in."""
        if room.empty and self._rooms.get(room.consultation_id) is room:
            del self._rooms[room.consultation_id]
            if self.on_released is not None:
                self.on_released(room.consultation_id)

    def members_of(self, consultation_id: str) -> list[Member]:
        """Everyone of the consultation on this node, the waiting room included."""
        room = self._rooms.get(consultation_id)
        return room.everyone() if room else []

    def __len__(self) -> int:
        return len(self._rooms)

    def __iter__(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))

    # ------------------------------------------------------------ WorkerEvents

    def offer(
        self, consultation_id: str, participant_id: str, sdp: str, slots: list[SlotDescription]
    ) -> None:
        room = self._rooms.get(consultation_id)
        if room is not None:
            room.offer(participant_id, sdp, slots)

    def producer_opened(self, consultation_id: str, producer: ProducerInfo) -> None:
        room = self._rooms.get(consultation_id)
        if room is not None:
            room.producer_opened(producer)

    def producer_closed(self, consultation_id: str, producer: ProducerInfo) -> None:
        room = self._rooms.get(consultation_id)
        if room is not None:
            room.producer_closed(producer)

    def session_failed(self, consultation_id: str, participant_id: str, reason: str) -> None:
        room = self._rooms.get(consultation_id)
        if room is not None:
            room.session_failed(participant_id, reason)

    def notice(self, consultation_id: str, participant_id: str, code: str, message: str) -> None:
        room = self._rooms.get(consultation_id)
        if room is not None:
            room.notice(participant_id, code, message)

    def recording_event(self, consultation_id: str, event: dict[str, Any]) -> None:
        room = self._rooms.get(consultation_id)
        if room is not None:
            room.recording_event(event)

    def media_lost(self, consultation_id: str, reason: str) -> None:
        room = self._rooms.get(consultation_id)
        if room is not None:
            room.media_lost(reason)

    def quality(self, consultation_id: str, samples: list[QualitySample]) -> None:
        # Only this node's participants, named by role: another node keeps its own, and a
        # sample of nobody known here (the Room gone) is dropped.
        room = self._rooms.get(consultation_id)
        if room is None or self._quality is None:
            return
        known = [
            (s, room.roles[s.participant_id]) for s in samples if s.participant_id in room.roles
        ]
        if known:
            self._quality(consultation_id, known)
