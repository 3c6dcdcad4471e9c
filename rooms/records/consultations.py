"""Consultation records: who may see one, who takes part, when it happens.

A consultation record's id is the opaque consultation id of its join tokens. It belongs to
the requesting site; if it was asked of an expert department, the department's hospital
sees it too (through the partnership the request was made under). Who sees what:

- clinical staff (doctor, nurse, expert) of the requesting site, and its API token;
- experts of the expert hospital, and its API token, when it was asked of one of its
  departments;
- staff taking part by name (the accepting expert, staff invited by the doctor);
- nobody else: another site's staff, and administrators, get NotFound, as if it did not
  exist. Administrators manage accounts; they see no patients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import and_, false, insert, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from rooms.consultation import ConsultationKind, new_consultation_id
from rooms.records import scheduling, timeline
from rooms.records.access import Actor
from rooms.records.clinical import ClinicalCipher, ClinicalText, Sealer
from rooms.records.database import Database
from rooms.records.errors import Forbidden, InvalidInput, NotFound
from rooms.records.revocations import Scope
from rooms.records.scheduling import Appointment
from rooms.records.schema import (
    appointments,
    consultation_requests,
    consultation_staff,
    consultations,
    revocations,
    staff,
)
from rooms.records.sites import Sites, clean_name
from rooms.records.staff import Staff, StaffMember
from rooms.records.timeline import EventKind
from rooms.roles import Role, StaffRole, call_role

MAX_PATIENT_NAME = 200
_CARE = (StaffRole.doctor, StaffRole.nurse)


class Origin(StrEnum):
    request = "request"
    now = "now"


@dataclass(frozen=True)
class Consultation:
    id: str
    kind: ConsultationKind
    origin: Origin
    site_id: str
    department_id: str | None
    expert_site_id: str | None
    created_by: str
    created_at: datetime
    patient_name_sealed: bytes | None = field(repr=False)


@dataclass(frozen=True)
class Member:
    staff_id: str
    role: Role
    added_by: str
    added_at: datetime


@dataclass(frozen=True)
class Summary:
    """One line of a console's list."""

    consultation: Consultation
    appointment: Appointment | None
    request_id: str | None
    request_status: str | None
    urgency: str | None
    ended: bool


def may_see(actor: Actor, c: Consultation, members: set[str]) -> bool:
    if actor.system:
        return actor.site_id in (c.site_id, c.expert_site_id)
    if not actor.clinical:
        return False
    if actor.id in members:
        return True
    if actor.site_id == c.site_id:
        return True
    return (
        actor.role is StaffRole.expert
        and c.expert_site_id is not None
        and (actor.site_id == c.expert_site_id)
    )


def cares_for(actor: Actor, c: Consultation) -> bool:
    """The requesting site's doctors and nurses (and its system): who runs the consultation."""
    if actor.system:
        return actor.site_id == c.site_id
    return actor.has_role(*_CARE) and actor.site_id == c.site_id


def _visible_where(actor: Actor) -> ColumnElement[bool]:
    t = consultations
    if actor.system:
        return or_(t.c.site_id == actor.site_id, t.c.expert_site_id == actor.site_id)
    if not actor.clinical:
        return false()
    member_of = select(consultation_staff.c.consultation_id).where(
        consultation_staff.c.staff_id == actor.id
    )
    conditions: list[ColumnElement[bool]] = [t.c.id.in_(member_of)]
    if actor.site_id is not None:
        conditions.append(t.c.site_id == actor.site_id)
        if actor.role is StaffRole.expert:
            conditions.append(t.c.expert_site_id == actor.site_id)
    return or_(*conditions)


def patient_name(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    return clean_name(value, "patient name", MAX_PATIENT_NAME)


async def insert_consultation(
    conn: AsyncConnection,
    *,
    consultation_id: str,
    kind: ConsultationKind,
    origin: Origin,
    site_id: str,
    department_id: str | None,
    expert_site_id: str | None,
    by: Actor,
    patient_name_sealed: bytes | None,
    now: datetime,
) -> Consultation:
    row = {
        "id": consultation_id,
        "kind": kind.value,
        "origin": origin.value,
        "site_id": site_id,
        "department_id": department_id,
        "expert_site_id": expert_site_id,
        "created_by": by.id,
        "created_at": now,
        "patient_name_sealed": patient_name_sealed,
    }
    await conn.execute(insert(consultations).values(**row))
    if not by.system and by.role is not None:
        role = call_role(by.role)
        if role is not None:
            await add_member(conn, consultation_id, by.id, role, by=by.id, now=now)
    return _consultation(row)


async def add_member(
    conn: AsyncConnection,
    consultation_id: str,
    staff_id: str,
    role: Role,
    *,
    by: str,
    now: datetime,
) -> None:
    await conn.execute(
        insert(consultation_staff).values(
            consultation_id=consultation_id,
            staff_id=staff_id,
            role=role.value,
            added_by=by,
            added_at=now,
        )
    )


class Consultations:
    def __init__(
        self, database: Database, sites: Sites, staff_repo: Staff, cipher: ClinicalCipher
    ) -> None:
        self._db = database
        self._sites = sites
        self._staff = staff_repo
        self.cipher = cipher
        self._sealer = Sealer(cipher, "consultations")

    # ------------------------------------------------------------ start now

    async def start_now(
        self,
        actor: Actor,
        kind: ConsultationKind | str,
        *,
        minutes: int = scheduling.DEFAULT_MINUTES,
        patient: str | None = None,
        now: datetime | None = None,
    ) -> tuple[Consultation, Appointment]:
        """A consultation that starts at once, run by the doctor who starts it."""
        if actor.site_id is None or not (actor.system or actor.role is StaffRole.doctor):
            raise Forbidden("only a doctor starts a consultation")
        try:
            kind = ConsultationKind(kind)
        except ValueError:
            raise InvalidInput("kind is not one_to_one, joint or ward_round") from None
        name = patient_name(patient)
        at = now or datetime.now(UTC)
        scheduling.check_slot(at, minutes, at)
        cid = new_consultation_id()
        await self.cipher.create_key(cid)
        sealed = (
            await self._sealer.seal(cid, "patient_name", cid, name) if name is not None else None
        )
        async with self._db.engine.begin() as conn:
            record = await insert_consultation(
                conn,
                consultation_id=cid,
                kind=kind,
                origin=Origin.now,
                site_id=actor.site_id,
                department_id=None,
                expert_site_id=None,
                by=actor,
                patient_name_sealed=sealed,
                now=at,
            )
            appointment = await scheduling.book(conn, cid, at, minutes, by=actor.id, now=at)
            await timeline.append(conn, cid, EventKind.started, by=actor.id, at=at)
        return record, appointment

    # ------------------------------------------------------------ reading

    async def get(self, actor: Actor, consultation_id: str) -> Consultation:
        """The consultation, if ``actor`` may see it; NotFound otherwise."""
        found = await self._row(consultation_id)
        if found is None or not may_see(actor, found, await self._member_ids(consultation_id)):
            raise NotFound("no such consultation")
        return found

    async def record(self, consultation_id: str) -> Consultation:
        """Without a permission check: for the operator's tools only."""
        found = await self._row(consultation_id)
        if found is None:
            raise NotFound("no such consultation")
        return found

    async def summaries(
        self, actor: Actor, *, since: datetime, taking_part: bool = False, limit: int = 200
    ) -> list[Summary]:
        """What ``actor`` may see that is not long past: appointments from ``since`` on,
        and requests not decided yet; undecided requests first, then the soonest.
        ``taking_part``: only those ``actor`` takes part in by name."""
        t, a, r = consultations, appointments, consultation_requests
        ended = (
            select(revocations.c.id)
            .where(
                revocations.c.consultation_id == t.c.id,
                revocations.c.scope == Scope.consultation.value,
            )
            .exists()
        )
        query = (
            select(
                t,
                a.c.id.label("apt_id"),
                a.c.starts_at,
                a.c.minutes,
                a.c.sequence,
                a.c.updated_by,
                a.c.updated_at,
                r.c.id.label("request_id"),
                r.c.status.label("request_status"),
                r.c.urgency,
                ended.label("ended"),
            )
            .select_from(
                t.outerjoin(a, a.c.consultation_id == t.c.id).outerjoin(
                    r, r.c.consultation_id == t.c.id
                )
            )
            .where(
                _visible_where(actor),
                t.c.id.in_(
                    select(consultation_staff.c.consultation_id).where(
                        consultation_staff.c.staff_id == actor.id
                    )
                )
                if taking_part
                else true(),
                or_(
                    a.c.starts_at >= since,
                    and_(a.c.id.is_(None), r.c.status.in_(("pending", "proposed"))),
                ),
            )
            .order_by(a.c.starts_at.is_(None).desc(), a.c.starts_at, t.c.created_at)
            .limit(limit)
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        out = []
        for row in rows:
            appointment = None
            if row["apt_id"] is not None:
                appointment = Appointment(
                    id=row["apt_id"],
                    consultation_id=row["id"],
                    starts_at=row["starts_at"],
                    minutes=int(row["minutes"]),
                    sequence=int(row["sequence"]),
                    updated_by=row["updated_by"],
                    updated_at=row["updated_at"],
                )
            out.append(
                Summary(
                    consultation=_consultation(row),
                    appointment=appointment,
                    request_id=row["request_id"],
                    request_status=row["request_status"],
                    urgency=row["urgency"],
                    ended=bool(row["ended"]),
                )
            )
        return out

    async def members(self, consultation_id: str) -> list[Member]:
        query = (
            select(consultation_staff)
            .where(consultation_staff.c.consultation_id == consultation_id)
            .order_by(consultation_staff.c.added_at)
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [Member(r["staff_id"], Role(r["role"]), r["added_by"], r["added_at"]) for r in rows]

    async def appointment(self, consultation_id: str) -> Appointment | None:
        async with self._db.engine.connect() as conn:
            return await scheduling.appointment_of(conn, consultation_id)

    async def ended(self, consultation_id: str) -> bool:
        """Whether the consultation was ended (its host's ``end``, a revocation)."""
        query = select(revocations.c.id).where(
            revocations.c.consultation_id == consultation_id,
            revocations.c.scope == Scope.consultation.value,
        )
        async with self._db.engine.connect() as conn:
            return (await conn.execute(query.limit(1))).first() is not None

    async def timeline(self, actor: Actor, consultation_id: str) -> list[timeline.Event]:
        await self.get(actor, consultation_id)
        async with self._db.engine.connect() as conn:
            return await timeline.events(conn, consultation_id)

    async def patient_name(self, c: Consultation) -> ClinicalText:
        return await self._sealer.open(c.id, "patient_name", c.id, c.patient_name_sealed)

    async def call_role(self, actor: Actor, c: Consultation) -> Role | None:
        """The Role ``actor`` joins the call with, or None if they do not take part: the
        requesting site's clinical staff, and staff taking part by name."""
        if actor.system or not actor.clinical or actor.role is None:
            return None
        for member in await self.members(c.id):
            if member.staff_id == actor.id:
                return member.role
        if actor.site_id == c.site_id:
            return call_role(actor.role)
        return None

    async def experts(self, consultation_id: str) -> set[str]:
        """The staff ids of the consultation's experts (who may file an opinion)."""
        return {m.staff_id for m in await self.members(consultation_id) if m.role is Role.expert}

    # ------------------------------------------------------------ taking part

    async def invitable(self, actor: Actor, c: Consultation) -> list[StaffMember]:
        """Staff the doctor may add by name: clinical, enabled, of the requesting site, the
        expert hospital asked, or (a consultation started at once) a hospital the site has
        a partnership with; not taking part yet."""
        if not cares_for(actor, c):
            return []
        sites = await self._partner_sites(c)
        taken = await self._member_ids(c.id)
        query = (
            select(staff.c.id)
            .where(
                staff.c.site_id.in_(sites),
                staff.c.disabled_at.is_(None),
                staff.c.role.in_([r.value for r in (*_CARE, StaffRole.expert)]),
            )
            .order_by(staff.c.site_id, staff.c.display_name)
        )
        async with self._db.engine.connect() as conn:
            ids = [r[0] for r in (await conn.execute(query)).all()]
        return [await self._staff.get(i) for i in ids if i not in taken]

    async def add_staff(
        self, actor: Actor, consultation_id: str, staff_id: str, *, now: datetime | None = None
    ) -> StaffMember:
        """Add a staff member by name: they see the consultation and may join it."""
        c = await self.get(actor, consultation_id)
        if not cares_for(actor, c):
            raise Forbidden("only the requesting site's doctors and nurses invite staff")
        try:
            target = await self._staff.get(staff_id)
        except NotFound:
            raise NotFound("no such staff member") from None
        role = call_role(target.role)
        if target.disabled or role is None or target.site_id not in await self._partner_sites(c):
            raise NotFound("no such staff member")
        at = now or datetime.now(UTC)
        try:
            async with self._db.engine.begin() as conn:
                await add_member(conn, c.id, target.id, role, by=actor.id, now=at)
                await timeline.append(
                    conn, c.id, EventKind.staff_added, by=actor.id, at=at, ref=target.id
                )
        except IntegrityError:
            pass  # taking part already
        return target

    async def reschedule(
        self,
        actor: Actor,
        consultation_id: str,
        starts_at: datetime,
        minutes: int,
        *,
        now: datetime | None = None,
    ) -> Appointment:
        """Move the appointment (sequence + 1). The links made for the old time are revoked
        and reissued by the caller (signaling/console/clinic.py)."""
        c = await self.get(actor, consultation_id)
        if not (cares_for(actor, c) or actor.id in await self.experts(c.id)):
            raise Forbidden("only the doctors and experts of the consultation reschedule it")
        at = now or datetime.now(UTC)
        async with self._db.engine.begin() as conn:
            moved = await scheduling.move(conn, c.id, starts_at, minutes, by=actor.id, now=at)
            await timeline.append(
                conn, c.id, EventKind.rescheduled, by=actor.id, at=at, ref=moved.id
            )
        return moved

    # ------------------------------------------------------------ internals

    async def _partner_sites(self, c: Consultation) -> list[str]:
        if c.expert_site_id is not None:
            return [c.site_id, c.expert_site_id]
        partners = [
            p.expert_site_id
            for p in await self._sites.partnerships(c.site_id)
            if p.requester_site_id == c.site_id
        ]
        return [c.site_id, *dict.fromkeys(partners)]

    async def _row(self, consultation_id: str) -> Consultation | None:
        query = select(consultations).where(consultations.c.id == consultation_id)
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _consultation(row) if row is not None else None

    async def _member_ids(self, consultation_id: str) -> set[str]:
        query = select(consultation_staff.c.staff_id).where(
            consultation_staff.c.consultation_id == consultation_id
        )
        async with self._db.engine.connect() as conn:
            return {r[0] for r in (await conn.execute(query)).all()}


def _consultation(row: object) -> Consultation:
    r = dict(row)  # type: ignore[call-overload]
    sealed = r["patient_name_sealed"]
    return Consultation(
        id=r["id"],
        kind=ConsultationKind(r["kind"]),
        origin=Origin(r["origin"]),
        site_id=r["site_id"],
        department_id=r["department_id"],
        expert_site_id=r["expert_site_id"],
        created_by=r["created_by"],
        created_at=r["created_at"],
        patient_name_sealed=bytes(sealed) if sealed is not None else None,
    )
