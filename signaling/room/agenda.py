"""A ward round's agenda of beds, owned by the Room: where the round is, and its summary.

The beds are set up at the front desk (signaling/console/ward_api.py) and kept sealed with
the consultation's record (rooms/records/ward.py); the Room reads them once, and again when
the front desk changes them during the round. The attending (``Permission.floor``) moves on
(``agenda_next``) or to a bed (``agenda_goto``); everyone gets ``agenda`` (the current bed
and the next) on each change, on joining and on resuming. A consultation without a record
has no agenda (``total`` 0).

While a bed is current the Room notes who was there, who was given the floor and who was
unmuted (so could be heard); leaving the bed files that summary, sealed, with the bed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rooms.records.ward import Bed
from rooms.roles import Permission, Role, can
from signaling import protocol as p
from signaling.room.floor import is_ward_round
from signaling.room.limits import TokenBucket
from signaling.sharing.store import Keeping

if TYPE_CHECKING:
    from signaling.room.members import Member
    from signaling.room.room import Room

log = logging.getLogger(__name__)

# Who is shown a bed's patient reference and note; the others its label only.
CLINICIANS = frozenset({Role.doctor, Role.nurse, Role.expert})
# Moving through the agenda: a few in a row, then one a second.
MOVES_BURST = 5.0
MOVES_PER_S = 1.0
# Names kept per list of a bed's summary (the call's cap is far below it).
SUMMARY_NAMES = 32


@dataclass
class Visit:
    """What the round saw at one bed, for its summary."""

    bed: Bed
    started_at: float
    present: dict[str, str] = field(default_factory=dict)  # participant id -> name
    floor: dict[str, str] = field(default_factory=dict)
    heard: dict[str, str] = field(default_factory=dict)

    def summary(self, ended_at: float) -> dict[str, object]:
        return {
            "label": self.bed.label,
            "started_at": round(self.started_at, 3),
            "ended_at": round(ended_at, 3),
            "present": list(self.present.values())[:SUMMARY_NAMES],
            "floor": list(self.floor.values())[:SUMMARY_NAMES],
            "heard": list(self.heard.values())[:SUMMARY_NAMES],
            "note": self.bed.note,
        }


class Agenda:
    def __init__(self, room: Room, keeping: Keeping) -> None:
        self._room = room
        self._keeping = keeping
        self.beds: list[Bed] = []
        self.current: int | None = None
        self.done = False
        self.active = False
        self.visit: Visit | None = None
        self._loaded: asyncio.Future[None] | None = None
        self._buckets: dict[str, TokenBucket] = {}

    # ------------------------------------------------------------ reading the beds

    async def _ready(self) -> None:
        if self._loaded is None:
            self._loaded = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loaded)

    async def _load(self) -> None:
        sharing = self._keeping.sharing
        if sharing is None or sharing.ward is None or not await self._keeping.record():
            return
        try:
            beds = await sharing.ward.beds(self._keeping.consultation_id)
        except Exception:
            log.exception("%r: reading the agenda failed", self._room)
            return
        current = self.bed
        self.beds = beds
        # The bed the round is at stays current, wherever it is now.
        ids = [b.id for b in beds]
        self.current = ids.index(current.id) if current is not None and current.id in ids else None
        if current is not None and self.current is None:
            self.visit = None
        if self.visit is not None and self.current is not None:
            self.visit.bed = beds[self.current]

    async def reload(self) -> None:
        """The front desk changed the beds: read them again and tell everyone."""
        self._loaded = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loaded)
        self.announce()

    @property
    def bed(self) -> Bed | None:
        return self.beds[self.current] if self.current is not None else None

    # ------------------------------------------------------------ telling people

    def state_for(self, member: Member) -> p.AgendaState:
        clinician = member.grant.role in CLINICIANS
        upcoming = self._upcoming()
        return p.AgendaState(
            current=_info(self.bed, clinician),
            next=_info(upcoming, clinician),
            position=None if self.current is None else self.current + 1,
            total=len(self.beds),
            done=self.done,
        )

    def _upcoming(self) -> Bed | None:
        if self.done:
            return None
        following = 0 if self.current is None else self.current + 1
        return self.beds[following] if following < len(self.beds) else None

    def announce(self) -> None:
        if not self.active:
            return
        for member in list(self._room.members.values()):
            member.link.post(self.state_for(member))

    async def joined(self, member: Member) -> None:
        if not is_ward_round(member):
            return
        self.active = True
        await self._ready()
        self._present(member)
        member.link.post(self.state_for(member))

    def resumed(self, member: Member) -> None:
        if self.active:
            member.link.post(self.state_for(member))

    # ------------------------------------------------------------ the summary

    def _present(self, member: Member) -> None:
        if self.visit is not None and len(self.visit.present) < SUMMARY_NAMES:
            self.visit.present.setdefault(member.id, member.participant.name)

    def floor_given(self, member: Member) -> None:
        if self.visit is not None and len(self.visit.floor) < SUMMARY_NAMES:
            self.visit.floor.setdefault(member.id, member.participant.name)
        self.heard(member)

    def heard(self, member: Member) -> None:
        """``member``'s audio is forwarded now (unmuted, or given the floor)."""
        if self.visit is not None and len(self.visit.heard) < SUMMARY_NAMES:
            self.visit.heard.setdefault(member.id, member.participant.name)

    async def _start_visit(self) -> None:
        bed = self.bed
        self.visit = None if bed is None else Visit(bed, time.time())
        if self.visit is None:
            return
        muted = {
            x.id for x in await self._room.store.participants(self._room.consultation_id)
            if x.audio_muted
        }  # fmt: skip
        for member in self._room.members.values():
            self._present(member)
            if member.id not in muted and can(member.grant.role, Permission.publish):
                self.heard(member)

    def file_visit(self) -> None:
        """The round leaves the current bed (or ends): its summary, sealed, with the bed."""
        visit, self.visit = self.visit, None
        sharing = self._keeping.sharing
        if visit is None or sharing is None or sharing.ward is None:
            return
        summary = visit.summary(time.time())
        cid = self._room.consultation_id
        self._room.audit.record("bed_summary_filed", consultation=cid, bed=visit.bed.id)
        self._room.spawn(
            sharing.ward.file_summary(cid, visit.bed.id, summary), "filing a bed's summary"
        )

    # ------------------------------------------------------------ messages

    async def move(self, member: Member, bed_id: str | None) -> None:
        """``agenda_next`` (``bed_id`` None) or ``agenda_goto``."""
        ref = "agenda_next" if bed_id is None else "agenda_goto"
        if not can(member.grant.role, Permission.floor):
            raise p.ProtocolError("forbidden", f"role {member.grant.role} may not lead", ref)
        if not self.active:
            raise p.ProtocolError("unexpected", "only a ward round has an agenda", ref)
        bucket = self._buckets.setdefault(
            member.grant.identity, TokenBucket(MOVES_PER_S, MOVES_BURST)
        )
        if not bucket.take():
            raise p.ProtocolError("rate_limited", "the agenda moved too often", ref)
        # Read again: the front desk may have changed it through another signaling node.
        self._loaded = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loaded)
        if not self.beds:
            raise p.ProtocolError("unexpected", "the agenda has no beds", ref)
        if bed_id is None:
            following = 0 if self.current is None or self.done else self.current + 1
            target: int | None = following if following < len(self.beds) else None
        else:
            ids = [b.id for b in self.beds]
            if bed_id not in ids:
                raise p.ProtocolError("unexpected", "no such bed on the agenda", ref)
            target = ids.index(bed_id)
        if target == self.current and not self.done:
            return
        self.file_visit()
        self.current, self.done = target, target is None
        await self._start_visit()
        self._room.audit.record(
            "agenda_moved",
            consultation=self._room.consultation_id,
            participant=member.id,
            bed=self.bed.id if self.bed is not None else None,
        )
        self.announce()


def _info(bed: Bed | None, clinician: bool) -> p.BedInfo | None:
    if bed is None:
        return None
    if not clinician:
        return p.BedInfo(id=bed.id, label=bed.label)
    return p.BedInfo(
        id=bed.id, label=bed.label, patientRef=bed.patient_ref or None, note=bed.note or None
    )
