"""The clinical consoles' pages: the doctor's and the expert's console (``/console``), a
consultation's page, and the printable invitation and opinion.

Rendered on the server with the strict page headers, like the admin console; parts marked
``data-live`` are refetched by web/static/console.js when a change notice arrives, so a
request reaches the expert's queue, and an acceptance the doctor's console, within a second
without reloading. Every read goes through the records' permission checks; another site's
consultation is 404, as one that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web

from rooms.consultation import ConsultationKind
from rooms.records.access import Actor
from rooms.records.clinical import Shredded, Unreadable
from rooms.records.consultations import Consultation, cares_for
from rooms.records.errors import Conflict, Duplicate, Forbidden, NotFound, RecordError
from rooms.records.passwords import Busy
from rooms.records.scheduling import DEFAULT_MINUTES, MAX_MINUTES, MIN_MINUTES
from rooms.records.staff import StaffMember
from rooms.roles import StaffRole
from signaling.console import call_quality
from signaling.console.clinic import CLINIC, ClinicService
from signaling.console.views import (
    Names,
    consultation_row,
    iso,
    request_row,
    shown,
    summary_row,
    utc_text,
)
from signaling.http.pages import page_language, render
from web.i18n import messages

# The console's "today": from 12 hours ago (a morning's consultations at night) on.
_RECENT = timedelta(hours=12)
_TODAY = timedelta(hours=24)
_DONE = frozenset(
    {
        "requested",
        "started",
        "accepted",
        "proposed",
        "declined",
        "countered",
        "rescheduled",
        "invited",
        "staff_added",
        "attached",
        "opinion",
        "acknowledged",
        "password",
        "bed_added",
        "bed_removed",
    }
)
# The HTTP status of a refusal: by its class, or by its code where that says more.
_BY_CLASS: tuple[tuple[type[RecordError], int], ...] = (
    (NotFound, 404),
    (Forbidden, 403),
    (Duplicate, 409),
    (Conflict, 409),
    (Shredded, 410),
    (Unreadable, 500),
    (Busy, 503),
)
_BY_CODE = {"too_large": 413, "busy": 503}


def status_of(exc: RecordError) -> int:
    if exc.code in _BY_CODE:
        return _BY_CODE[exc.code]
    return next((status for cls, status in _BY_CLASS if isinstance(exc, cls)), 400)


@dataclass(frozen=True)
class Page:
    service: ClinicService
    member: StaffMember
    lang: str
    t: dict[str, str]
    now: datetime

    @property
    def actor(self) -> Actor:
        return self.member.actor


async def page(request: web.Request) -> Page:
    """The logged-in clinical staff member (admins go to their own console)."""
    service = request.app[CLINIC]
    member = await service.frontdesk.sessions.current(request)
    if member is None:
        raise web.HTTPSeeOther("/login")
    if not member.actor.clinical:
        raise web.HTTPSeeOther("/console/admin")
    lang = page_language(request)
    return Page(service, member, lang, messages(lang), service.clock())


async def _common(request: web.Request, p: Page, /, **context: Any) -> dict[str, Any]:
    done = request.query.get("done")
    return {
        "lang": p.lang,
        "t": p.t,
        "me": p.member,
        "csrf": await p.service.frontdesk.sessions.csrf_token(request),
        "done": done if done in _DONE else None,
        "error": None,
        "detail": None,
        "min_minutes": MIN_MINUTES,
        "max_minutes": MAX_MINUTES,
        "default_minutes": DEFAULT_MINUTES,
        **context,
    }


# ------------------------------------------------------------------ the consoles


async def home(request: web.Request) -> web.Response:
    p = await page(request)
    return await render_home(request, p)


async def render_home(
    request: web.Request, p: Page, *, status: int = 200, error: RecordError | None = None
) -> web.Response:
    if p.member.role is StaffRole.expert:
        context = await _expert_context(request, p)
        template = "console_expert.html"
    else:
        from signaling.console import terminals

        context = await _doctor_context(p)
        context.update(await terminals.desk_context(request, p))
        template = "console_doctor.html"
    common = await _common(request, p, **context)
    if error is not None:
        common["error"], common["detail"] = error.code, str(error)
    return render(template, status, **common)


async def _rows(p: Page, *, taking_part: bool = False) -> list[dict[str, Any]]:
    clinic = p.service.clinic
    names = Names(p.service.frontdesk.desk)
    rows = []
    for s in await clinic.consultations.summaries(
        p.actor, since=p.now - _RECENT, taking_part=taking_part
    ):
        patient = await clinic.consultations.patient_name(s.consultation)
        rows.append(await summary_row(names, s, patient, p.now))
    return rows


async def _doctor_context(p: Page) -> dict[str, Any]:
    desk = p.service.frontdesk.desk
    rows = await _rows(p)
    soon = p.now + _TODAY
    today = [
        r
        for r in rows
        if r["starts_at"] and r["state"] in ("scheduled", "open") and r["starts_at"] < iso(soon)
    ]
    later = [r for r in rows if r["starts_at"] and r not in today and r["state"] == "scheduled"]
    waiting = [r for r in rows if r["state"] in ("pending", "proposed")]
    departments = []
    if p.member.site_id is not None:
        for partnership in await desk.sites.partnerships(p.member.site_id):
            if partnership.requester_site_id != p.member.site_id:
                continue
            department = await desk.sites.department(partnership.department_id)
            expert = await desk.sites.get(partnership.expert_site_id)
            departments.append({"id": department.id, "name": department.name, "site": expert.name})
    return {
        "today": today,
        "later": later,
        "waiting": waiting,
        "departments": departments,
        "kinds": [k.value for k in ConsultationKind],
        "may_start": p.member.role is StaffRole.doctor,
        "refresh_url": "/console",
    }


async def _expert_context(request: web.Request, p: Page) -> dict[str, Any]:
    desk = p.service.frontdesk.desk
    clinic = p.service.clinic
    departments = await desk.sites.departments(p.member.site_id) if p.member.site_id else []
    chosen = request.query.get("department")
    selected = next((d for d in departments if d.id == chosen), None) or (
        departments[0] if departments else None
    )
    names = Names(desk)
    queue = []
    if selected is not None:
        for r in await clinic.requests.queue(p.actor, selected.id):
            c = await clinic.consultations.get(p.actor, r.consultation_id)
            queue.append(
                await request_row(
                    names,
                    r,
                    c,
                    reason=await clinic.requests.reason(r),
                    patient=await clinic.consultations.patient_name(c),
                    attachments=len(await clinic.attachments.list(p.actor, c.id)),
                )
            )
    refresh = "/console" + (f"?department={quote(selected.id)}" if selected else "")
    return {
        "departments": departments,
        "selected": selected,
        "queue": queue,
        "mine": [r for r in await _rows(p, taking_part=True) if r["state"] != "pending"],
        "refresh_url": refresh,
    }


# ------------------------------------------------------------------ a consultation


async def consultation_page(request: web.Request) -> web.Response:
    p = await page(request)
    return await render_consultation(request, p, request.match_info["consultation"])


async def render_consultation(
    request: web.Request,
    p: Page,
    consultation_id: str,
    *,
    status: int = 200,
    error: RecordError | None = None,
) -> web.Response:
    try:
        context = await _consultation_context(p, consultation_id)
    except RecordError as exc:
        if error is None and exc.code == "not_found":
            raise web.HTTPNotFound(text="no such consultation") from None
        # The consultation itself cannot be shown (a refused action on another site's
        # record): answer on the console instead.
        return await render_home(request, p, status=status, error=error or exc)
    from signaling.console import terminals

    context.update(
        await terminals.consultation_context(request, p, consultation_id, context["may_invite"])
    )
    common = await _common(request, p, **context)
    if error is not None:
        common["error"], common["detail"] = error.code, str(error)
    return render("consultation.html", status, **common)


async def _consultation_context(p: Page, consultation_id: str) -> dict[str, Any]:
    clinic = p.service.clinic
    actor = p.actor
    c = await clinic.consultations.get(actor, consultation_id)
    names = Names(p.service.frontdesk.desk)
    appointment = await clinic.consultations.appointment(c.id)
    request = await clinic.requests.of_consultation(c.id)
    ended = await clinic.consultations.ended(c.id)
    patient = await clinic.consultations.patient_name(c)
    row = await consultation_row(
        names,
        c,
        appointment=appointment,
        request_status=request.status.value if request else None,
        urgency=request.urgency.value if request else None,
        ended=ended,
        patient=patient,
        now=p.now,
    )
    call_role = await clinic.consultations.call_role(actor, c)
    experts = await clinic.consultations.experts(c.id)
    care = cares_for(actor, c)
    live = appointment is not None and not ended and p.now < appointment.window.closes_at
    context: dict[str, Any] = {
        "c": row,
        "refresh_url": f"/console/consultations/{c.id}",
        "appointment": _appointment(appointment),
        "request": None,
        "may_decide": False,
        "may_answer": False,
        "may_join": call_role is not None and live,
        "may_reschedule": appointment is not None and not ended and (care or actor.id in experts),
        "may_invite": care and live,
        "may_add_staff": care and not ended,
        "may_upload": not ended and (care or call_role is not None),
        "may_file": actor.id in experts,
        "may_acknowledge": actor.role is StaffRole.doctor and actor.site_id == c.site_id,
    }
    if request is not None:
        context["request"] = await request_row(
            names,
            request,
            c,
            reason=await clinic.requests.reason(request),
            patient=patient,
            attachments=0,
        )
        if request.status.value == "declined":
            context["request"]["decline_reason"] = shown(
                await clinic.requests.decline_reason(request)
            )
        context["may_decide"] = (
            request.status.value == "pending"
            and actor.role is StaffRole.expert
            and actor.site_id == c.expert_site_id
        )
        context["may_answer"] = request.status.value == "proposed" and care
    if c.kind is ConsultationKind.ward_round:
        # The round's agenda, and each bed's summary once the round has been there.
        context["beds"] = [
            {
                "id": b.id,
                "label": b.label,
                "patient_ref": b.patient_ref,
                "note": b.note,
                "summary": b.summary,
            }
            for b in await clinic.ward.beds(c.id)
        ]
        from signaling.console.ward_api import may_change_agenda

        # The form is shown to whom the API lets change the agenda; the form's POST asks
        # the same rule again (signaling/console/ward_api.py).
        context["may_edit_agenda"] = may_change_agenda(p.member)
    context["members"] = [
        {
            "name": await names.staff(m.staff_id),
            "role": m.role.value,
            "site": await names.site(
                (await p.service.frontdesk.desk.staff.get(m.staff_id)).site_id
            ),
        }
        for m in await clinic.consultations.members(c.id)
    ]
    context["invitable"] = (
        [
            {
                "id": m.id,
                "name": m.display_name,
                "role": m.role.value,
                "site": await names.site(m.site_id),
            }
            for m in await clinic.consultations.invitable(actor, c)
        ]
        if care
        else []
    )
    links = []
    if care:
        for inv in await clinic.invitations.links(c.id):
            links.append(
                {
                    "id": inv.id,
                    "role": inv.role.value,
                    "name": shown(await clinic.invitations.name(inv)),
                    "from": iso(inv.valid_from),
                    "from_text": utc_text(inv.valid_from),
                    "until": iso(inv.valid_until),
                    "until_text": utc_text(inv.valid_until),
                    "live": inv.live and p.now < inv.valid_until,
                    "revoked": not inv.live,
                }
            )
    context["links"] = links
    files = []
    for a in await clinic.attachments.list(actor, c.id):
        files.append(
            {
                "id": a.id,
                "name": shown(await clinic.attachments.name(a)),
                "type": a.media_type.value,
                "image": a.media_type.is_image,
                "size": a.size,
                "by": await names.staff(a.uploaded_by),
                "at": iso(a.created_at),
                "at_text": utc_text(a.created_at),
            }
        )
    context["attachments"] = files
    versions = []
    for o in await clinic.opinions.versions(actor, c.id):
        reading = await clinic.opinions.read(o)
        versions.append(
            {
                "id": o.id,
                "version": o.version,
                "author": await names.staff(o.author_id),
                "signed_at": iso(o.signed_at),
                "signed_text": utc_text(o.signed_at),
                "check": reading.check.value,
                "fields": reading.fields.as_dict() if reading.fields else None,
                "acknowledged_by": await names.staff(o.acknowledged_by),
                "acknowledged_at": iso(o.acknowledged_at),
                "acknowledged_text": utc_text(o.acknowledged_at),
                "key": o.key_id,
            }
        )
    context["opinions"] = versions
    latest = versions[-1] if versions else None
    context["latest"] = latest
    # How the call went for each participant (the Workers' samples), for the host afterwards.
    context["quality"] = call_quality.report(await clinic.quality.samples(c))
    context["timeline"] = [
        {
            "at": iso(e.at),
            "at_text": utc_text(e.at),
            "kind": e.kind.value,
            "by": await names.staff(e.by),
            "system": bool(e.by and e.by.startswith("tok_")),
        }
        for e in await clinic.consultations.timeline(actor, c.id)
    ]
    return context


def _appointment(appointment: Any) -> dict[str, Any] | None:
    if appointment is None:
        return None
    window = appointment.window
    return {
        "starts_at": iso(appointment.starts_at),
        "starts_text": utc_text(appointment.starts_at),
        "minutes": appointment.minutes,
        "opens_at": iso(window.opens_at),
        "closes_at": iso(window.closes_at),
        "sequence": appointment.sequence,
    }


# ------------------------------------------------------------------ printable pages


async def invitation_print(request: web.Request) -> web.Response:
    p = await page(request)
    clinic = p.service.clinic
    invitation_id = request.match_info["invitation"]
    try:
        invitation, c, url, name = await p.service.link(
            p.actor, invitation_id, p.service.base_url(request)
        )
    except RecordError as exc:
        raise _http(exc) from None
    names = Names(p.service.frontdesk.desk)
    appointment = await clinic.consultations.appointment(c.id)
    return render(
        "invitation_print.html",
        200,
        **await _common(
            request,
            p,
            invitation={
                "id": invitation.id,
                "role": invitation.role.value,
                "name": shown(name),
                "url": url,
                "from": iso(invitation.valid_from),
                "from_text": utc_text(invitation.valid_from),
                "until": iso(invitation.valid_until),
                "until_text": utc_text(invitation.valid_until),
                "live": invitation.live,
            },
            c={
                "id": c.id,
                "kind": c.kind.value,
                "site": await names.site(c.site_id),
                "department": await names.department(c.department_id),
                "expert_site": await names.site(c.expert_site_id),
            },
            appointment=_appointment(appointment),
        ),
    )


async def invitation_qr(request: web.Request) -> web.Response:
    p = await page(request)
    try:
        png = await p.service.qr(
            p.actor, request.match_info["invitation"], p.service.base_url(request)
        )
    except RecordError as exc:
        raise _http(exc) from None
    return web.Response(body=png, content_type="image/png", headers=_PRIVATE)


async def opinion_page(request: web.Request) -> web.Response:
    p = await page(request)
    clinic = p.service.clinic
    try:
        opinion = await clinic.opinions.get(p.actor, request.match_info["opinion"])
        c = await clinic.consultations.get(p.actor, opinion.consultation_id)
    except RecordError as exc:
        raise _http(exc) from None
    reading = await clinic.opinions.read(opinion)
    names = Names(p.service.frontdesk.desk)
    author = await p.service.frontdesk.desk.staff.get(opinion.author_id)
    versions = await clinic.opinions.versions(p.actor, c.id)
    return render(
        "opinion_print.html",
        200,
        **await _common(
            request,
            p,
            opinion={
                "id": opinion.id,
                "version": opinion.version,
                "key": opinion.key_id,
                "supersedes": opinion.supersedes,
                "author": author.display_name,
                "author_site": await names.site(author.site_id),
                "signed_at": iso(opinion.signed_at),
                "signed_text": utc_text(opinion.signed_at),
                "check": reading.check.value,
                "fields": reading.fields.as_dict() if reading.fields else None,
                "acknowledged_by": await names.staff(opinion.acknowledged_by),
                "acknowledged_at": iso(opinion.acknowledged_at),
                "acknowledged_text": utc_text(opinion.acknowledged_at),
                "newer": versions[-1].id if versions[-1].id != opinion.id else None,
            },
            c={
                "id": c.id,
                "kind": c.kind.value,
                "site": await names.site(c.site_id),
                "department": await names.department(c.department_id),
                "expert_site": await names.site(c.expert_site_id),
                "patient": shown(await clinic.consultations.patient_name(c)),
            },
            may_acknowledge=p.actor.role is StaffRole.doctor and p.actor.site_id == c.site_id,
        ),
    )


# ------------------------------------------------------------------ files


_PRIVATE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


async def attachment(request: web.Request) -> web.Response:
    p = await page(request)
    try:
        found, data, name = await p.service.download(p.actor, request.match_info["attachment"])
    except RecordError as exc:
        raise _http(exc) from None
    # Images may show in the page; a PDF (which may hold script) is only ever downloaded,
    # and nothing served here may run anything in our origin.
    inline = found.media_type.is_image and request.query.get("download") != "1"
    filename = name.text or f"{found.id}"
    disposition = "inline" if inline else "attachment"
    return web.Response(
        body=data,
        content_type=found.media_type.value,
        headers={
            **_PRIVATE,
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(filename)}",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Referrer-Policy": "no-referrer",
        },
    )


async def calendar(request: web.Request) -> web.Response:
    p = await page(request)
    clinic = p.service.clinic
    consultation_id = request.match_info["consultation"]
    try:
        c = await clinic.consultations.get(p.actor, consultation_id)
        names = Names(p.service.frontdesk.desk)
        summary = _summary(p.t, c, await names.department(c.department_id))
        url = f"{p.service.base_url(request)}/console/consultations/{c.id}"
        _, text = await p.service.calendar(p.actor, c.id, summary, p.t["desk.ics.description"], url)
    except RecordError as exc:
        raise _http(exc) from None
    return web.Response(
        text=text,
        content_type="text/calendar",
        charset="utf-8",
        headers={
            **_PRIVATE,
            "Content-Disposition": f'attachment; filename="consultation-{c.id}.ics"',
        },
    )


def _summary(t: dict[str, str], c: Consultation, department: str) -> str:
    """The calendar entry's title: the kind and the department, never the patient."""
    kind = t["desk.kind.request"] if department else t[f"kind.{c.kind.value}"]
    return f"{kind} · {department}" if department else kind


def _http(exc: RecordError) -> web.HTTPException:
    status = status_of(exc)
    if status == 404:
        return web.HTTPNotFound(text=str(exc))
    if status == 403:
        return web.HTTPForbidden(text=str(exc))
    if status == 410:
        return web.HTTPGone(text="this consultation's records have been shredded")
    return web.HTTPBadRequest(text=str(exc))


def setup(app: web.Application) -> None:
    get = app.router.add_get
    get("/console/consultations/{consultation}", consultation_page)
    get("/console/consultations/{consultation}/appointment.ics", calendar)
    get("/console/invitations/{invitation}/print", invitation_print)
    get("/console/invitations/{invitation}/qr.png", invitation_qr)
    get("/console/opinions/{opinion}", opinion_page)
    get("/console/attachments/{attachment}", attachment)
