"""Requests for an expert consultation, and the department's queue.

A doctor (or nurse, or their site's hospital system) asks a department of an expert
hospital their site has a partnership with; without one the answer is Forbidden, with the
reason. The department's experts see the queue ordered by urgency, then age, and decide:

    pending --accept(time)--> accepted            (appointment booked, expert takes part)
    pending --propose(time)--> proposed --doctor accepts--> accepted
                                        --doctor counters (new preferred times)--> pending
    pending --decline(reason)--> declined

Every decision is one conditional UPDATE (``... WHERE status = 'pending'``) checked by its
row count, so when two experts accept at once exactly one wins; the other gets Conflict.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from rooms.consultation import ConsultationKind, new_consultation_id
from rooms.records import scheduling, timeline
from rooms.records.access import Actor
from rooms.records.clinical import ClinicalCipher, ClinicalText, Sealer
from rooms.records.consultations import (
    Consultation,
    Consultations,
    Origin,
    add_member,
    insert_consultation,
    patient_name,
)
from rooms.records.database import Database
from rooms.records.errors import Conflict, Forbidden, InvalidInput, NotFound
from rooms.records.ids import new_id
from rooms.records.scheduling import Appointment
from rooms.records.schema import consultation_requests
from rooms.records.sites import Department, Sites
from rooms.records.timeline import EventKind
from rooms.roles import Role, StaffRole

MAX_REASON = 4000
MAX_PREFERRED_TIMES = 3


class Urgency(StrEnum):
    routine = "routine"
    urgent = "urgent"
    emergency = "emergency"

    @property
    def rank(self) -> int:
        """The queue's order: emergencies first."""
        return {"emergency": 0, "urgent": 1, "routine": 2}[self.value]


class RequestStatus(StrEnum):
    pending = "pending"
    proposed = "proposed"
    accepted = "accepted"
    declined = "declined"


@dataclass(frozen=True)
class ConsultationRequest:
    id: str
    consultation_id: str
    department_id: str
    requested_by: str
    urgency: Urgency
    reason_sealed: bytes = field(repr=False)
    preferred_times: tuple[datetime, ...]
    status: RequestStatus
    proposed_start: datetime | None
    proposed_minutes: int | None
    proposed_by: str | None
    decided_by: str | None
    decided_at: datetime | None
    decline_reason_sealed: bytes | None = field(repr=False)
    created_at: datetime
    updated_at: datetime


def clean_text(value: str, field_name: str, limit: int) -> str:
    """A free text (a reason, an opinion's field): trimmed, NFC, line breaks and tabs kept,
    no other control characters."""
    text = unicodedata.normalize("NFC", value.replace("\r\n", "\n").strip())
    if not text:
        raise InvalidInput(f"{field_name} is empty")
    if len(text) > limit:
        raise InvalidInput(f"{field_name} is longer than {limit} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c not in "\n\t" for c in text):
        raise InvalidInput(f"{field_name} contains control characters")
    return text


def _preferred(times: list[datetime], now: datetime) -> list[datetime]:
    if len(times) > MAX_PREFERRED_TIMES:
        raise InvalidInput(f"at most {MAX_PREFERRED_TIMES} preferred times")
    out = []
    for at in times:
        scheduling.check_slot(at, scheduling.DEFAULT_MINUTES, now)
        out.append(at.astimezone(UTC).replace(microsecond=0))
    return sorted(out)


class Requests:
    def __init__(
        self,
        database: Database,
        sites: Sites,
        consultations: Consultations,
        cipher: ClinicalCipher,
    ) -> None:
        self._db = database
        self._sites = sites
        self._consultations = consultations
        self.cipher = cipher
        self._sealer = Sealer(cipher, "consultation_requests")
        self._names = Sealer(cipher, "consultations")

    # ------------------------------------------------------------ asking

    async def create(
        self,
        actor: Actor,
        department_id: str,
        *,
        urgency: Urgency | str,
        reason: str,
        patient: str,
        preferred_times: list[datetime] | None = None,
        now: datetime | None = None,
    ) -> tuple[ConsultationRequest, Consultation]:
        department = await self.require_may_request(actor, department_id)
        assert actor.site_id is not None
        try:
            urgency = Urgency(urgency)
        except ValueError:
            raise InvalidInput("urgency is routine, urgent or emergency") from None
        reason = clean_text(reason, "reason", MAX_REASON)
        name = patient_name(patient)
        if name is None:
            raise InvalidInput("patient name is empty")
        at = now or datetime.now(UTC)
        times = _preferred(preferred_times or [], at)
        cid = new_consultation_id()
        request_id = new_id("req")
        await self.cipher.create_key(cid)
        reason_sealed = await self._sealer.seal(cid, "reason", request_id, reason)
        name_sealed = await self._names.seal(cid, "patient_name", cid, name)
        row = {
            "id": request_id,
            "consultation_id": cid,
            "department_id": department.id,
            "requested_by": actor.id,
            "urgency": urgency.value,
            "urgency_rank": urgency.rank,
            "reason_sealed": reason_sealed,
            "preferred_times": _times_json(times),
            "status": RequestStatus.pending.value,
            "proposed_start": None,
            "proposed_minutes": None,
            "proposed_by": None,
            "decided_by": None,
            "decided_at": None,
            "decline_reason_sealed": None,
            "created_at": at,
            "updated_at": at,
        }
        async with self._db.engine.begin() as conn:
            consultation = await insert_consultation(
                conn,
                consultation_id=cid,
                kind=ConsultationKind.joint,
                origin=Origin.request,
                site_id=actor.site_id,
                department_id=department.id,
                expert_site_id=department.site_id,
                by=actor,
                patient_name_sealed=name_sealed,
                now=at,
            )
            await conn.execute(insert(consultation_requests).values(**row))
            await timeline.append(
                conn, cid, EventKind.requested, by=actor.id, at=at, ref=request_id
            )
        return _request(row), consultation

    async def require_may_request(self, actor: Actor, department_id: str) -> Department:
        """The department, if ``actor`` may ask it now; Forbidden with the reason if not."""
        if actor.site_id is None or not (
            actor.system or actor.has_role(StaffRole.doctor, StaffRole.nurse)
        ):
            raise Forbidden("only doctors and nurses request consultations")
        department = await self._sites.department(department_id)
        if not await self._sites.may_request(actor.site_id, department.id):
            raise Forbidden(
                "your site has no partnership with this department", code="no_partnership"
            )
        return department

    # ------------------------------------------------------------ reading

    async def get(self, actor: Actor, request_id: str) -> ConsultationRequest:
        found = await self._one(consultation_requests.c.id == request_id)
        if found is None:
            raise NotFound("no such request")
        try:
            await self._consultations.get(actor, found.consultation_id)
        except NotFound:
            raise NotFound("no such request") from None
        return found

    async def of_consultation(self, consultation_id: str) -> ConsultationRequest | None:
        return await self._one(consultation_requests.c.consultation_id == consultation_id)

    async def queue(self, actor: Actor, department_id: str) -> list[ConsultationRequest]:
        """The department's requests waiting for a decision (pending) or for the doctor's
        answer to a proposed time (proposed): emergencies first, then the oldest."""
        department = await self._sites.department(department_id)
        self._require_expert_of(actor, department.site_id, allow_system=True)
        t = consultation_requests
        query = (
            select(t)
            .where(
                t.c.department_id == department.id,
                t.c.status.in_((RequestStatus.pending.value, RequestStatus.proposed.value)),
            )
            .order_by(
                t.c.status != RequestStatus.pending.value, t.c.urgency_rank, t.c.created_at, t.c.id
            )
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_request(r) for r in rows]

    async def reason(self, request: ConsultationRequest) -> ClinicalText:
        return await self._sealer.open(
            request.consultation_id, "reason", request.id, request.reason_sealed
        )

    async def decline_reason(self, request: ConsultationRequest) -> ClinicalText:
        return await self._sealer.open(
            request.consultation_id, "decline_reason", request.id, request.decline_reason_sealed
        )

    # ------------------------------------------------------------ the department decides

    async def accept(
        self,
        actor: Actor,
        request_id: str,
        starts_at: datetime,
        minutes: int = scheduling.DEFAULT_MINUTES,
        *,
        now: datetime | None = None,
    ) -> Appointment:
        """Accept with a time: the appointment is booked and the expert takes part. Of two
        experts accepting at once, one wins; the other gets Conflict."""
        request, c = await self._for_expert(actor, request_id)
        at = now or datetime.now(UTC)
        scheduling.check_slot(starts_at, minutes, at)
        async with self._db.engine.begin() as conn:
            await self._decide(
                conn,
                request.id,
                RequestStatus.pending,
                status=RequestStatus.accepted.value,
                decided_by=actor.id,
                decided_at=at,
                updated_at=at,
            )
            appointment = await scheduling.book(conn, c.id, starts_at, minutes, by=actor.id, now=at)
            await add_member(conn, c.id, actor.id, Role.expert, by=actor.id, now=at)
            await timeline.append(
                conn, c.id, EventKind.accepted, by=actor.id, at=at, ref=appointment.id
            )
        return appointment

    async def propose(
        self,
        actor: Actor,
        request_id: str,
        starts_at: datetime,
        minutes: int = scheduling.DEFAULT_MINUTES,
        *,
        now: datetime | None = None,
    ) -> ConsultationRequest:
        """Propose another time; the requesting doctor accepts it or counters."""
        request, c = await self._for_expert(actor, request_id)
        at = now or datetime.now(UTC)
        scheduling.check_slot(starts_at, minutes, at)
        async with self._db.engine.begin() as conn:
            await self._decide(
                conn,
                request.id,
                RequestStatus.pending,
                status=RequestStatus.proposed.value,
                proposed_start=starts_at,
                proposed_minutes=minutes,
                proposed_by=actor.id,
                updated_at=at,
            )
            await timeline.append(conn, c.id, EventKind.proposed, by=actor.id, at=at)
        return await self._fresh(request.id)

    async def decline(
        self, actor: Actor, request_id: str, reason: str, *, now: datetime | None = None
    ) -> ConsultationRequest:
        request, c = await self._for_expert(actor, request_id)
        text = clean_text(reason, "reason", MAX_REASON)
        at = now or datetime.now(UTC)
        sealed = await self._sealer.seal(c.id, "decline_reason", request.id, text)
        async with self._db.engine.begin() as conn:
            await self._decide(
                conn,
                request.id,
                RequestStatus.pending,
                status=RequestStatus.declined.value,
                decided_by=actor.id,
                decided_at=at,
                decline_reason_sealed=sealed,
                updated_at=at,
            )
            await timeline.append(conn, c.id, EventKind.declined, by=actor.id, at=at)
        return await self._fresh(request.id)

    # ------------------------------------------------------------ the doctor answers

    async def accept_proposal(
        self, actor: Actor, request_id: str, *, now: datetime | None = None
    ) -> Appointment:
        """The doctor takes the proposed time: booked, and the proposing expert takes part."""
        request, c = await self._for_requester(actor, request_id)
        if request.status is not RequestStatus.proposed or request.proposed_start is None:
            raise Conflict("no time is proposed for this request", code="changed")
        at = now or datetime.now(UTC)
        minutes = request.proposed_minutes or scheduling.DEFAULT_MINUTES
        expert = request.proposed_by or actor.id
        scheduling.check_slot(request.proposed_start, minutes, at)
        async with self._db.engine.begin() as conn:
            await self._decide(
                conn,
                request.id,
                RequestStatus.proposed,
                status=RequestStatus.accepted.value,
                decided_by=expert,
                decided_at=at,
                updated_at=at,
            )
            appointment = await scheduling.book(
                conn, c.id, request.proposed_start, minutes, by=actor.id, now=at
            )
            await add_member(conn, c.id, expert, Role.expert, by=actor.id, now=at)
            await timeline.append(
                conn, c.id, EventKind.accepted, by=actor.id, at=at, ref=appointment.id
            )
        return appointment

    async def counter(
        self,
        actor: Actor,
        request_id: str,
        preferred_times: list[datetime],
        *,
        now: datetime | None = None,
    ) -> ConsultationRequest:
        """The doctor turns the proposal down with other times: back in the queue."""
        request, c = await self._for_requester(actor, request_id)
        at = now or datetime.now(UTC)
        times = _preferred(preferred_times, at)
        if not times:
            raise InvalidInput("give at least one preferred time")
        async with self._db.engine.begin() as conn:
            await self._decide(
                conn,
                request.id,
                RequestStatus.proposed,
                status=RequestStatus.pending.value,
                preferred_times=_times_json(times),
                proposed_start=None,
                proposed_minutes=None,
                proposed_by=None,
                updated_at=at,
            )
            await timeline.append(conn, c.id, EventKind.countered, by=actor.id, at=at)
        return await self._fresh(request.id)

    # ------------------------------------------------------------ internals

    async def _decide(
        self, conn: AsyncConnection, request_id: str, expected: RequestStatus, **values: object
    ) -> None:
        t = consultation_requests
        result = await conn.execute(
            update(t).where(t.c.id == request_id, t.c.status == expected.value).values(**values)
        )
        if result.rowcount != 1:
            raise Conflict("this request was decided by someone else meanwhile", code="taken")

    def _require_expert_of(self, actor: Actor, expert_site_id: str, *, allow_system: bool) -> None:
        if actor.site_id != expert_site_id or not (
            actor.role is StaffRole.expert or (allow_system and actor.system)
        ):
            raise Forbidden("only the department's experts decide its requests")

    async def _for_expert(
        self, actor: Actor, request_id: str
    ) -> tuple[ConsultationRequest, Consultation]:
        request = await self.get(actor, request_id)
        c = await self._consultations.get(actor, request.consultation_id)
        self._require_expert_of(actor, c.expert_site_id or "", allow_system=False)
        if request.status is not RequestStatus.pending:
            raise Conflict("this request was decided already", code="taken")
        return request, c

    async def _for_requester(
        self, actor: Actor, request_id: str
    ) -> tuple[ConsultationRequest, Consultation]:
        request = await self.get(actor, request_id)
        c = await self._consultations.get(actor, request.consultation_id)
        if actor.site_id != c.site_id or not (
            actor.system or actor.has_role(StaffRole.doctor, StaffRole.nurse)
        ):
            raise Forbidden("only the requesting site's doctors and nurses answer a proposal")
        return request, c

    async def _fresh(self, request_id: str) -> ConsultationRequest:
        found = await self._one(consultation_requests.c.id == request_id)
        assert found is not None
        return found

    async def _one(self, where: object) -> ConsultationRequest | None:
        query = select(consultation_requests).where(where)  # type: ignore[arg-type]
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _request(row) if row is not None else None


def _times_json(times: list[datetime]) -> str:
    return json.dumps([t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in times])


def _times(text: str) -> tuple[datetime, ...]:
    return tuple(
        datetime.strptime(v, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) for v in json.loads(text)
    )


def _request(row: object) -> ConsultationRequest:
    r = dict(row)  # type: ignore[call-overload]
    declined = r["decline_reason_sealed"]
    return ConsultationRequest(
        id=r["id"],
        consultation_id=r["consultation_id"],
        department_id=r["department_id"],
        requested_by=r["requested_by"],
        urgency=Urgency(r["urgency"]),
        reason_sealed=bytes(r["reason_sealed"]),
        preferred_times=_times(r["preferred_times"]),
        status=RequestStatus(r["status"]),
        proposed_start=r["proposed_start"],
        proposed_minutes=r["proposed_minutes"],
        proposed_by=r["proposed_by"],
        decided_by=r["decided_by"],
        decided_at=r["decided_at"],
        decline_reason_sealed=bytes(declined) if declined is not None else None,
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )
