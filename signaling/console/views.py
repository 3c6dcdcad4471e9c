"""What the clinical consoles show, read through the records' permission checks: names of
staff, sites and departments, a consultation's state, times for the page to show in the
reader's own time zone, and times typed into a form in it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rooms.records.clinical import ClinicalText
from rooms.records.consultations import Consultation, Summary
from rooms.records.errors import InvalidInput, NotFound
from rooms.records.frontdesk import FrontDesk
from rooms.records.requests import ConsultationRequest, RequestStatus
from rooms.records.scheduling import Appointment

# The browser's Date.getTimezoneOffset(): minutes from local time to UTC (-840..+720).
_MAX_OFFSET_MIN = 16 * 60


def iso(at: datetime | None) -> str:
    """A time for ``<time datetime>``: console.js shows it in the reader's time zone."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if at else ""


def utc_text(at: datetime | None) -> str:
    """What the page says before (or without) its script: the time in UTC."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if at else ""


def local_input(at: datetime | None, offset_min: int = 0) -> str:
    """A value for ``<input type=datetime-local>`` (UTC unless the offset is known)."""
    if at is None:
        return ""
    return (at.astimezone(UTC) - timedelta(minutes=offset_min)).strftime("%Y-%m-%dT%H:%M")


def parse_local(value: str, offset: str) -> datetime | None:
    """A ``datetime-local`` value typed in the browser's zone, to UTC. ``offset`` is the
    browser's getTimezoneOffset() for it, filled in by console.js (empty without script:
    the form then says its times are UTC)."""
    value = value.strip()
    if not value:
        return None
    try:
        naive = datetime.strptime(value[:16], "%Y-%m-%dT%H:%M")
        minutes = int(offset) if offset.strip() else 0
    except ValueError:
        raise InvalidInput("a time is not in the form YYYY-MM-DDTHH:MM", code="bad_time") from None
    if not -_MAX_OFFSET_MIN <= minutes <= _MAX_OFFSET_MIN:
        raise InvalidInput("the time zone offset is out of range", code="bad_time")
    return naive.replace(tzinfo=UTC) + timedelta(minutes=minutes)


def state(
    *,
    request_status: str | None,
    appointment: Appointment | None,
    ended: bool,
    now: datetime,
) -> str:
    """pending | proposed | declined | scheduled | open | past | ended."""
    if ended:
        return "ended"
    if request_status in (RequestStatus.pending, RequestStatus.proposed, RequestStatus.declined):
        return str(request_status)
    if appointment is None:
        return "pending"
    window = appointment.window
    if now < window.opens_at:
        return "scheduled"
    return "open" if now < window.closes_at else "past"


def shown(text: ClinicalText) -> dict[str, Any]:
    """A clinical text for a template: ``text``, or ``state`` (shredded, unreadable)."""
    return {"text": text.text, "state": text.state.value}


@dataclass
class Names:
    """Display names of staff, sites and departments, looked up once per page."""

    desk: FrontDesk
    _staff: dict[str, str] = field(default_factory=dict)
    _sites: dict[str, str] = field(default_factory=dict)
    _departments: dict[str, str] = field(default_factory=dict)

    async def staff(self, staff_id: str | None) -> str:
        if not staff_id:
            return ""
        if staff_id not in self._staff:
            if staff_id.startswith("tok_"):
                self._staff[staff_id] = ""  # a hospital system: the template says so
            else:
                try:
                    self._staff[staff_id] = (await self.desk.staff.get(staff_id)).display_name
                except NotFound:
                    self._staff[staff_id] = ""
        return self._staff[staff_id]

    async def site(self, site_id: str | None) -> str:
        if not site_id:
            return ""
        if site_id not in self._sites:
            try:
                self._sites[site_id] = (await self.desk.sites.get(site_id)).name
            except NotFound:
                self._sites[site_id] = ""
        return self._sites[site_id]

    async def department(self, department_id: str | None) -> str:
        if not department_id:
            return ""
        if department_id not in self._departments:
            try:
                found = await self.desk.sites.department(department_id)
                self._departments[department_id] = found.name
            except NotFound:
                self._departments[department_id] = ""
        return self._departments[department_id]


async def consultation_row(
    names: Names,
    c: Consultation,
    *,
    appointment: Appointment | None,
    request_status: str | None,
    urgency: str | None,
    ended: bool,
    patient: ClinicalText,
    now: datetime,
) -> dict[str, Any]:
    return {
        "id": c.id,
        "kind": c.kind.value,
        "origin": c.origin.value,
        "state": state(
            request_status=request_status, appointment=appointment, ended=ended, now=now
        ),
        "urgency": urgency,
        "patient": shown(patient),
        "site": await names.site(c.site_id),
        "department": await names.department(c.department_id),
        "expert_site": await names.site(c.expert_site_id),
        "starts_at": iso(appointment.starts_at) if appointment else "",
        "starts_text": utc_text(appointment.starts_at) if appointment else "",
        "minutes": appointment.minutes if appointment else None,
        "joinable": appointment is not None and not ended and now < appointment.window.closes_at,
    }


async def summary_row(
    names: Names, summary: Summary, patient: ClinicalText, now: datetime
) -> dict[str, Any]:
    return await consultation_row(
        names,
        summary.consultation,
        appointment=summary.appointment,
        request_status=summary.request_status,
        urgency=summary.urgency,
        ended=summary.ended,
        patient=patient,
        now=now,
    )


async def request_row(
    names: Names,
    request: ConsultationRequest,
    c: Consultation,
    *,
    reason: ClinicalText,
    patient: ClinicalText,
    attachments: int,
) -> dict[str, Any]:
    return {
        "id": request.id,
        "consultation": c.id,
        "urgency": request.urgency.value,
        "status": request.status.value,
        "site": await names.site(c.site_id),
        "department": await names.department(request.department_id),
        "requested_by": await names.staff(request.requested_by),
        "created_at": iso(request.created_at),
        "created_text": utc_text(request.created_at),
        "preferred": [{"iso": iso(t), "text": utc_text(t)} for t in request.preferred_times],
        "first_preferred": local_input(request.preferred_times[0])
        if request.preferred_times
        else "",
        "proposed": {"iso": iso(request.proposed_start), "text": utc_text(request.proposed_start)}
        if request.proposed_start
        else None,
        "proposed_minutes": request.proposed_minutes,
        "proposed_by": await names.staff(request.proposed_by),
        "reason": shown(reason),
        "patient": shown(patient),
        "attachments": attachments,
    }
