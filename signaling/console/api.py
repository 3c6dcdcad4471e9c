"""The front desk's JSON API, ``/api/frontdesk/...``: the consoles' actions for scripts and
hospital systems.

Who may call: a logged-in staff member (the session cookie, and ``X-CSRF-Token`` on every
write, as the console's forms), or a hospital system with its site's API token
(``Authorization: Bearer tcs_...``), which acts for its site as its front desk: it sees the
site's consultations, asks for consultations, starts them and invites patients; deciding a
request, filing or acknowledging an opinion takes a person (403 with a token). With the
header present the cookie is never looked at.

Every body and answer is a pydantic model, declared with its route (``route``), which is
what the OpenAPI document is generated from (signaling/http/openapi.py); unknown fields are
refused. Errors are ``{"error": code, "message": text}`` with
the status the consoles use (a department without a partnership: 403, ``no_partnership``);
messages never echo what was sent. Answers are ``Cache-Control: no-store``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from rooms.consultation import ConsultationKind
from rooms.records.access import Actor
from rooms.records.clinical import ClinicalText
from rooms.records.consultations import Consultation
from rooms.records.errors import Forbidden, RecordError
from rooms.records.opinions import Opinion, OpinionFields
from rooms.records.requests import ConsultationRequest, Urgency
from rooms.records.scheduling import DEFAULT_MINUTES, Appointment
from rooms.records.staff import StaffMember
from signaling.console.api_auth import bearer_token, has_bearer
from signaling.console.clinic import CLINIC, ClinicService
from signaling.console.desk_pages import status_of
from signaling.console.views import state
from signaling.http import openapi
from signaling.http.openapi import Operation

PREFIX = "/api/frontdesk"
_NO_STORE = {"Cache-Control": "no-store"}
_RECENT = timedelta(hours=12)


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------ bodies


class StartNow(ApiModel):
    kind: ConsultationKind
    minutes: int = DEFAULT_MINUTES
    patient: str | None = Field(default=None, max_length=200)


class NewRequest(ApiModel):
    department: str = Field(max_length=32)
    urgency: Urgency
    reason: str = Field(max_length=4000)
    patient: str = Field(max_length=200)
    preferred_times: list[AwareDatetime] = Field(default_factory=list, max_length=3)


class Slot(ApiModel):
    start: AwareDatetime
    minutes: int = DEFAULT_MINUTES


class Decline(ApiModel):
    reason: str = Field(max_length=4000)


class Counter(ApiModel):
    preferred_times: list[AwareDatetime] = Field(min_length=1, max_length=3)


class NewInvitation(ApiModel):
    role: Literal["patient", "observer"] = "patient"
    name: str = Field(max_length=200)


class AddStaff(ApiModel):
    staff: str = Field(max_length=32)


class NewOpinion(ApiModel):
    findings: str = Field(max_length=8000)
    impression: str = Field(max_length=8000)
    recommendations: str = Field(max_length=8000)
    follow_up: str = Field(default="", max_length=8000)
    supersedes: str | None = Field(default=None, max_length=32)


# ------------------------------------------------------------------ answers


class ErrorOut(ApiModel):
    error: str
    message: str


class AppointmentOut(ApiModel):
    id: str
    starts_at: datetime
    minutes: int
    sequence: int
    # When its links work: 15 minutes before the start to the end plus the grace period.
    opens_at: datetime
    closes_at: datetime


class RequestOut(ApiModel):
    id: str
    consultation: str
    department: str
    urgency: Urgency
    status: str
    created_at: datetime
    preferred_times: list[datetime]
    proposed_start: datetime | None
    proposed_minutes: int | None
    # Clinical texts; ``None`` with a state (shredded, unreadable) when they cannot be read.
    reason: str | None
    reason_state: str
    patient: str | None
    patient_state: str


class ConsultationOut(ApiModel):
    id: str
    kind: ConsultationKind
    origin: str
    # pending | proposed | declined | scheduled | open | past | ended
    state: str
    site: str
    department: str | None
    expert_site: str | None
    request: str | None
    appointment: AppointmentOut | None


class ConsultationList(ApiModel):
    consultations: list[ConsultationOut]


class Queue(ApiModel):
    requests: list[RequestOut]


class InvitationOut(ApiModel):
    id: str
    consultation: str
    role: str
    valid_from: datetime
    valid_until: datetime
    # The link itself: a password for the call, for the invitee only.
    url: str


class AttachmentOut(ApiModel):
    id: str
    media_type: str
    size: int
    sha256: str
    created_at: datetime


class OpinionFieldsOut(ApiModel):
    findings: str
    impression: str
    recommendations: str
    follow_up: str


class OpinionOut(ApiModel):
    id: str
    consultation: str
    version: int
    supersedes: str | None
    author: str
    key_id: str
    signed_at: datetime
    # ok | shredded | unreadable | mismatch | unknown_key | bad_signature
    check: str
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    fields: OpinionFieldsOut | None


class EventOut(ApiModel):
    at: datetime
    kind: str
    by: str | None
    ref: str | None


class ConsultationDetail(ConsultationOut):
    patient: str | None
    patient_state: str
    attachments: list[AttachmentOut]
    opinions: list[OpinionOut]
    timeline: list[EventOut]


# ------------------------------------------------------------------ the plumbing


@dataclass(frozen=True)
class Caller:
    actor: Actor
    # None for a hospital system's token.
    member: StaffMember | None

    def person(self) -> StaffMember:
        if self.member is None:
            raise Forbidden("a person must do this, not a hospital system", code="person_only")
        return self.member


Handler = Callable[[ClinicService, Caller, Any, web.Request], Awaitable[ApiModel]]


async def _caller(request: web.Request, service: ClinicService) -> Caller:
    if has_bearer(request):
        try:
            token = await bearer_token(request)
        except web.HTTPUnauthorized:
            raise _json_error(
                401,
                "unauthorized",
                "a live API token is required",
                {"WWW-Authenticate": "Bearer"},
            ) from None
        return Caller(Actor.site_system(token.id, token.site_id), None)
    member = await service.frontdesk.sessions.current(request)
    if member is None:
        raise _json_error(401, "unauthorized", "log in, or send a site's API token")
    return Caller(member.actor, member)


def _json_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.HTTPException:
    return _Status[status](
        text=ErrorOut(error=code, message=message).model_dump_json(),
        content_type="application/json",
        headers={**_NO_STORE, **(headers or {})},
    )


_Status: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    410: web.HTTPGone,
    413: web.HTTPRequestEntityTooLarge,
    415: web.HTTPUnsupportedMediaType,
    500: web.HTTPInternalServerError,
    503: web.HTTPServiceUnavailable,
}


def _validation_message(exc: ValidationError) -> str:
    # Where and what, never the value sent (it may be a patient's name).
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
    )[:500]


def route(
    method: str,
    path: str,
    body: type[ApiModel] | None,
    answer: type[ApiModel],
    *,
    status: int = 200,
) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.Response]]]:

    def wrap(fn: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            service = request.app[CLINIC]
            caller = await _caller(request, service)
            parsed = None
            if body is not None:
                if request.content_type != "application/json":
                    raise _json_error(415, "unsupported", "send application/json")
                try:
                    parsed = body.model_validate_json(await request.read())
                except ValidationError as exc:
                    raise _json_error(400, "invalid", _validation_message(exc)) from None
            try:
                out = await fn(service, caller, parsed, request)
            except RecordError as exc:
                code = status_of(exc)
                raise _json_error(code if code in _Status else 400, exc.code, str(exc)) from None
            return web.Response(
                text=out.model_dump_json(),
                status=status,
                content_type="application/json",
                headers=_NO_STORE,
            )

        handler.__name__ = fn.__name__
        errors: dict[int, type[ApiModel]] = {c: ErrorOut for c in (401, 403, 404, 409)}
        if body is not None:
            errors.update({400: ErrorOut, 415: ErrorOut})
        operation = Operation(
            method,
            PREFIX + path,
            (fn.__doc__ or fn.__name__.replace("_", " ")).strip().splitlines()[0],
            {status: answer, **errors},
            body=body,
            security=("siteApiToken", "staffSession"),
            tag="frontdesk",
        )
        _OPERATIONS.append((operation, handler))
        return handler

    return wrap


_OPERATIONS: list[tuple[Operation, Callable[[web.Request], Awaitable[web.Response]]]] = []


def _appointment(a: Appointment | None) -> AppointmentOut | None:
    if a is None:
        return None
    return AppointmentOut(
        id=a.id,
        starts_at=a.starts_at,
        minutes=a.minutes,
        sequence=a.sequence,
        opens_at=a.window.opens_at,
        closes_at=a.window.closes_at,
    )


async def _consultation(service: ClinicService, c: Consultation) -> ConsultationOut:
    clinic = service.clinic
    appointment = await clinic.consultations.appointment(c.id)
    request = await clinic.requests.of_consultation(c.id)
    ended = await clinic.consultations.ended(c.id)
    return ConsultationOut(
        id=c.id,
        kind=c.kind,
        origin=c.origin.value,
        state=state(
            request_status=request.status.value if request else None,
            appointment=appointment,
            ended=ended,
            now=service.clock(),
        ),
        site=c.site_id,
        department=c.department_id,
        expert_site=c.expert_site_id,
        request=request.id if request else None,
        appointment=_appointment(appointment),
    )


def _text(text: ClinicalText) -> tuple[str | None, str]:
    return text.text, text.state.value


async def _request(service: ClinicService, r: ConsultationRequest, c: Consultation) -> RequestOut:
    reason, reason_state = _text(await service.clinic.requests.reason(r))
    patient, patient_state = _text(await service.clinic.consultations.patient_name(c))
    return RequestOut(
        id=r.id,
        consultation=r.consultation_id,
        department=r.department_id,
        urgency=r.urgency,
        status=r.status.value,
        created_at=r.created_at,
        preferred_times=list(r.preferred_times),
        proposed_start=r.proposed_start,
        proposed_minutes=r.proposed_minutes,
        reason=reason,
        reason_state=reason_state,
        patient=patient,
        patient_state=patient_state,
    )


async def _opinion(service: ClinicService, o: Opinion) -> OpinionOut:
    reading = await service.clinic.opinions.read(o)
    return OpinionOut(
        id=o.id,
        consultation=o.consultation_id,
        version=o.version,
        supersedes=o.supersedes,
        author=o.author_id,
        key_id=o.key_id,
        signed_at=o.signed_at,
        check=reading.check.value,
        acknowledged_by=o.acknowledged_by,
        acknowledged_at=o.acknowledged_at,
        fields=OpinionFieldsOut(**reading.fields.as_dict()) if reading.fields else None,
    )


# ------------------------------------------------------------------ consultations


@route("GET", "/consultations", None, ConsultationList)
async def list_consultations(
    service: ClinicService, caller: Caller, _: None, request: web.Request
) -> ConsultationList:
    found = await service.clinic.consultations.summaries(
        caller.actor, since=service.clock() - _RECENT
    )
    return ConsultationList(
        consultations=[await _consultation(service, s.consultation) for s in found]
    )


@route("POST", "/consultations", StartNow, ConsultationOut, status=201)
async def start_now(
    service: ClinicService, caller: Caller, body: StartNow, request: web.Request
) -> ConsultationOut:
    c = await service.start_now(caller.actor, body.kind.value, body.minutes, body.patient)
    return await _consultation(service, c)


@route("GET", "/consultations/{consultation}", None, ConsultationDetail)
async def get_consultation(
    service: ClinicService, caller: Caller, _: None, request: web.Request
) -> ConsultationDetail:
    clinic = service.clinic
    c = await clinic.consultations.get(caller.actor, request.match_info["consultation"])
    patient, patient_state = _text(await clinic.consultations.patient_name(c))
    base = await _consultation(service, c)
    return ConsultationDetail(
        **base.model_dump(),
        patient=patient,
        patient_state=patient_state,
        attachments=[
            AttachmentOut(
                id=a.id,
                media_type=a.media_type.value,
                size=a.size,
                sha256=a.sha256,
                created_at=a.created_at,
            )
            for a in await clinic.attachments.list(caller.actor, c.id)
        ],
        opinions=[
            await _opinion(service, o) for o in await clinic.opinions.versions(caller.actor, c.id)
        ],
        timeline=[
            EventOut(at=e.at, kind=e.kind.value, by=e.by, ref=e.ref)
            for e in await clinic.consultations.timeline(caller.actor, c.id)
        ],
    )


@route("POST", "/consultations/{consultation}/appointment", Slot, AppointmentOut)
async def reschedule(
    service: ClinicService, caller: Caller, body: Slot, request: web.Request
) -> AppointmentOut:
    moved = await service.reschedule(
        caller.actor, request.match_info["consultation"], body.start, body.minutes
    )
    out = _appointment(moved)
    assert out is not None
    return out


@route(
    "POST", "/consultations/{consultation}/invitations", NewInvitation, InvitationOut, status=201
)
async def invite(
    service: ClinicService, caller: Caller, body: NewInvitation, request: web.Request
) -> InvitationOut:
    invitation = await service.invite(
        caller.actor, request.match_info["consultation"], body.role, body.name
    )
    _, _, url, _ = await service.link(caller.actor, invitation.id, service.base_url(request))
    return InvitationOut(
        id=invitation.id,
        consultation=invitation.consultation_id,
        role=invitation.role.value,
        valid_from=invitation.valid_from,
        valid_until=invitation.valid_until,
        url=url,
    )


@route("POST", "/consultations/{consultation}/staff", AddStaff, ConsultationOut)
async def add_staff(
    service: ClinicService, caller: Caller, body: AddStaff, request: web.Request
) -> ConsultationOut:
    consultation_id = request.match_info["consultation"]
    await service.add_staff(caller.actor, consultation_id, body.staff)
    return await _consultation(
        service, await service.clinic.consultations.get(caller.actor, consultation_id)
    )


@route("POST", "/consultations/{consultation}/opinions", NewOpinion, OpinionOut, status=201)
async def file_opinion(
    service: ClinicService, caller: Caller, body: NewOpinion, request: web.Request
) -> OpinionOut:
    fields = OpinionFields.checked(
        findings=body.findings,
        impression=body.impression,
        recommendations=body.recommendations,
        follow_up=body.follow_up,
    )
    opinion = await service.file_opinion(
        caller.person(), request.match_info["consultation"], fields, body.supersedes
    )
    return await _opinion(service, opinion)


# ------------------------------------------------------------------ requests


@route("POST", "/requests", NewRequest, ConsultationOut, status=201)
async def new_request(
    service: ClinicService, caller: Caller, body: NewRequest, request: web.Request
) -> ConsultationOut:
    c = await service.request(
        caller.actor,
        body.department,
        urgency=body.urgency.value,
        reason=body.reason,
        patient=body.patient,
        preferred_times=list(body.preferred_times),
    )
    return await _consultation(service, c)


@route("GET", "/departments/{department}/queue", None, Queue)
async def queue(service: ClinicService, caller: Caller, _: None, request: web.Request) -> Queue:
    clinic = service.clinic
    out = []
    for r in await clinic.requests.queue(caller.actor, request.match_info["department"]):
        c = await clinic.consultations.get(caller.actor, r.consultation_id)
        out.append(await _request(service, r, c))
    return Queue(requests=out)


@route("POST", "/requests/{request}/accept", Slot, ConsultationOut)
async def accept(
    service: ClinicService, caller: Caller, body: Slot, request: web.Request
) -> ConsultationOut:
    c = await service.accept(
        caller.person(), request.match_info["request"], body.start, body.minutes
    )
    return await _consultation(service, c)


@route("POST", "/requests/{request}/propose", Slot, ConsultationOut)
async def propose(
    service: ClinicService, caller: Caller, body: Slot, request: web.Request
) -> ConsultationOut:
    c = await service.propose(
        caller.person(), request.match_info["request"], body.start, body.minutes
    )
    return await _consultation(service, c)


@route("POST", "/requests/{request}/decline", Decline, ConsultationOut)
async def decline(
    service: ClinicService, caller: Caller, body: Decline, request: web.Request
) -> ConsultationOut:
    c = await service.decline(caller.person(), request.match_info["request"], body.reason)
    return await _consultation(service, c)


@route("POST", "/requests/{request}/accept-proposal", None, ConsultationOut)
async def accept_proposal(
    service: ClinicService, caller: Caller, _: None, request: web.Request
) -> ConsultationOut:
    c = await service.accept_proposal(caller.actor, request.match_info["request"])
    return await _consultation(service, c)


@route("POST", "/requests/{request}/counter", Counter, ConsultationOut)
async def counter(
    service: ClinicService, caller: Caller, body: Counter, request: web.Request
) -> ConsultationOut:
    c = await service.counter(
        caller.actor, request.match_info["request"], list(body.preferred_times)
    )
    return await _consultation(service, c)


# ------------------------------------------------------------------ opinions


@route("GET", "/opinions/{opinion}", None, OpinionOut)
async def get_opinion(
    service: ClinicService, caller: Caller, _: None, request: web.Request
) -> OpinionOut:
    opinion = await service.clinic.opinions.get(caller.actor, request.match_info["opinion"])
    return await _opinion(service, opinion)


@route("POST", "/opinions/{opinion}/acknowledge", None, OpinionOut)
async def acknowledge(
    service: ClinicService, caller: Caller, _: None, request: web.Request
) -> OpinionOut:
    caller.person()
    opinion = await service.acknowledge(caller.actor, request.match_info["opinion"])
    return await _opinion(service, opinion)


def setup(app: web.Application) -> None:
    api = openapi.routes(app)
    for operation, handler in _OPERATIONS:
        api.add(app, operation, handler)
