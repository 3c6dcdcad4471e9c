"""A ward round's agenda at the front desk: ``/api/frontdesk/consultations/{c}/agenda``.

The attending (or the site's hospital system, with its API token) sets up the beds of a
ward-round consultation before the round and changes them during it; whoever may see the
consultation reads them back, with each bed's summary once the round has been there. The
beds are kept sealed with the consultation's record (rooms/records/ward.py); a live Room
on this node reads them again at once and tells everyone in the call (``agenda``). The
consultation's console page changes them through ``add`` and ``remove`` here too
(signaling/console/desk_actions.py), under the same rule (``may_change_agenda``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from rooms.consultation import ConsultationKind
from rooms.records.access import Actor
from rooms.records.errors import Conflict, Forbidden
from rooms.records.staff import StaffMember
from rooms.records.ward import MAX_LABEL, MAX_NOTE, MAX_PATIENT_REF, Bed
from rooms.roles import StaffRole
from signaling.console.api import ApiModel, Caller, route
from signaling.console.clinic import ClinicService
from signaling.room.rooms import Rooms

_ROOMS: web.AppKey[Rooms] = web.AppKey("ward_rooms", Rooms)
# Staff who may change an agenda (a site's hospital system may too).
_LEADS = frozenset({StaffRole.doctor, StaffRole.nurse})


class NewBed(ApiModel):
    label: str = Field(min_length=1, max_length=MAX_LABEL)
    # The hospital system's opaque reference (never a name).
    patient_ref: str = Field(default="", max_length=MAX_PATIENT_REF)
    note: str = Field(default="", max_length=MAX_NOTE)


class BedOut(ApiModel):
    id: str
    position: int
    label: str
    patient_ref: str
    note: str
    # The round's summary of this bed, once it has been there: label, started_at,
    # ended_at (epoch seconds), present, floor, heard (display names), note.
    summary: dict[str, Any] | None = None


class AgendaOut(ApiModel):
    beds: list[BedOut]
    # The bed the live round is at on this node, if any.
    current: str | None = None


def setup(app: web.Application, rooms: Rooms) -> None:
    """The routes are registered with the front desk's (signaling/console/api.py); the
    Rooms are told when an agenda changes."""
    app[_ROOMS] = rooms


def may_change_agenda(member: StaffMember | None) -> bool:
    """Whether a caller may change a ward round's agenda: the attending or a nurse, or the
    site's hospital system (no member). The API and the console's form both ask this."""
    return member is None or member.role in _LEADS


async def ward_round(
    service: ClinicService,
    actor: Actor,
    member: StaffMember | None,
    consultation_id: str,
    *,
    change: bool,
) -> str:
    """The consultation's id, if the caller may see it (or change its agenda) and it is a ward
    round; refused with a RecordError otherwise."""
    c = await service.clinic.consultations.get(actor, consultation_id)
    if c.kind is not ConsultationKind.ward_round:
        raise Conflict("only a ward round has an agenda", code="not_ward_round")
    if change and not may_change_agenda(member):
        raise Forbidden("the attending or a nurse sets up the agenda")
    return c.id


async def add(
    service: ClinicService,
    actor: Actor,
    member: StaffMember | None,
    request: web.Request,
    consultation_id: str,
    fields: NewBed,
) -> Bed:
    """Add a bed at the end of the agenda, for the API and the console's form alike."""
    consultation_id = await ward_round(service, actor, member, consultation_id, change=True)
    bed = await service.clinic.ward.add(
        consultation_id, fields.label, fields.patient_ref, fields.note
    )
    _changed(service, actor, request, "agenda_bed_added", consultation_id, bed.id)
    return bed


async def remove(
    service: ClinicService,
    actor: Actor,
    member: StaffMember | None,
    request: web.Request,
    consultation_id: str,
    bed_id: str,
) -> None:
    """Take a bed off the agenda, for the API and the console's form alike."""
    consultation_id = await ward_round(service, actor, member, consultation_id, change=True)
    await service.clinic.ward.remove(consultation_id, bed_id)
    _changed(service, actor, request, "agenda_bed_removed", consultation_id, bed_id)


async def _agenda(service: ClinicService, request: web.Request, consultation_id: str) -> AgendaOut:
    beds = await service.clinic.ward.beds(consultation_id)
    room = request.app[_ROOMS].get(consultation_id)
    current = room.agenda.bed if room is not None else None
    return AgendaOut(beds=[_bed(b) for b in beds], current=current.id if current else None)


def _bed(b: Bed) -> BedOut:
    return BedOut(
        id=b.id,
        position=b.position,
        label=b.label,
        patient_ref=b.patient_ref,
        note=b.note,
        summary=b.summary,
    )


def _changed(service: ClinicService, actor: Actor, request: web.Request, action: str,
             consultation_id: str, bed_id: str) -> None:  # fmt: skip
    service.frontdesk.audit.record(action, by=actor.id, consultation=consultation_id, bed=bed_id)
    room = request.app[_ROOMS].get(consultation_id)
    if room is not None:
        room.spawn(room.agenda.reload(), "reading the agenda again")


@route("GET", "/consultations/{consultation}/agenda", None, AgendaOut)
async def get_agenda(
    service: ClinicService, caller: Caller, _: None, request: web.Request
) -> AgendaOut:
    """A ward round's agenda of beds, with each bed's summary once visited"""
    consultation_id = await ward_round(
        service, caller.actor, caller.member, request.match_info["consultation"], change=False
    )
    return await _agenda(service, request, consultation_id)


@route("POST", "/consultations/{consultation}/agenda", NewBed, BedOut, status=201)
async def add_bed(
    service: ClinicService, caller: Caller, body: NewBed, request: web.Request
) -> BedOut:
    """Add a bed at the end of a ward round's agenda"""
    consultation_id = request.match_info["consultation"]
    return _bed(await add(service, caller.actor, caller.member, request, consultation_id, body))


@route("DELETE", "/consultations/{consultation}/agenda/{bed}", None, AgendaOut)
async def remove_bed(
    service: ClinicService, caller: Caller, _: None, request: web.Request
) -> AgendaOut:
    """Take a bed off a ward round's agenda"""
    consultation_id = request.match_info["consultation"]
    bed_id = request.match_info["bed"]
    await remove(service, caller.actor, caller.member, request, consultation_id, bed_id)
    return await _agenda(service, request, consultation_id)
