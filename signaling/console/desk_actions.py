"""The clinical consoles' forms: each a POST that does one thing through ClinicService
(signaling/console/clinic.py) and redirects back, so every form works without JavaScript.
A refusal renders the page the form was on, with the reason and a fitting status (a request
to a department without a partnership: 403, saying so)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from urllib.parse import quote

from aiohttp import web
from pydantic import ValidationError

from rooms.records.errors import InvalidInput, RecordError
from rooms.records.opinions import OpinionFields
from rooms.records.ward import MAX_LABEL, MAX_NOTE, MAX_PATIENT_REF
from signaling.console import ward_api
from signaling.console.desk_pages import Page, page, render_consultation, render_home, status_of
from signaling.console.forms import Form, form
from signaling.console.views import parse_local

_MAX_TEXT = 8000

Action = Callable[[Page, Form], Awaitable[str]]


def _int(value: str, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{field} is not a number") from None


def _time(f: Form, name: str) -> datetime:
    at = parse_local(f.get(name, 32), f.get("tz", 8))
    if at is None:
        raise InvalidInput("give a date and time", code="no_time")
    return at


def _times(f: Form, name: str) -> list[datetime]:
    tz = f.get("tz", 8)
    return [t for t in (parse_local(v, tz) for v in f.getall(name, 32)[:3]) if t is not None]


def _consultation_url(consultation_id: str, done: str) -> str:
    return f"/console/consultations/{quote(consultation_id)}?done={done}"


async def _act(request: web.Request, consultation_id: str | None, action: Action) -> web.Response:
    p = await page(request)
    f = await form(request)
    try:
        location = await action(p, f)
    except RecordError as exc:
        status = status_of(exc)
        if consultation_id is not None:
            return await render_consultation(request, p, consultation_id, status=status, error=exc)
        return await render_home(request, p, status=status, error=exc)
    raise web.HTTPSeeOther(location)


# ------------------------------------------------------------------ starting and asking


async def start_now(request: web.Request) -> web.Response:
    async def action(p: Page, f: Form) -> str:
        c = await p.service.start_now(
            p.actor,
            f.get("kind"),
            _int(f.get("minutes") or "30", "minutes"),
            f.get("patient", 400) or None,
        )
        return _consultation_url(c.id, "started")

    return await _act(request, None, action)


async def new_request(request: web.Request) -> web.Response:
    async def action(p: Page, f: Form) -> str:
        c = await p.service.request(
            p.actor,
            f.get("department"),
            urgency=f.get("urgency"),
            reason=f.get("reason", _MAX_TEXT + 1),
            patient=f.get("patient", 400),
            preferred_times=_times(f, "preferred"),
            files=[part for part in f.files if part.name == "attachments" and part.data],
        )
        return _consultation_url(c.id, "requested")

    return await _act(request, None, action)


# ------------------------------------------------------------------ deciding


def _decision(verb: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        request_id = request.match_info["request"]
        f = await form(request)
        back_to_queue = f.get("back") == "queue"

        async def action(p: Page, f: Form) -> str:
            service, member = p.service, p.member
            if verb == "accept":
                minutes = _int(f.get("minutes") or "30", "minutes")
                c = await service.accept(member, request_id, _time(f, "start"), minutes)
                done = "accepted"
            elif verb == "propose":
                minutes = _int(f.get("minutes") or "30", "minutes")
                c = await service.propose(member, request_id, _time(f, "start"), minutes)
                done = "proposed"
            elif verb == "decline":
                c = await service.decline(member, request_id, f.get("reason", _MAX_TEXT + 1))
                done = "declined"
            elif f.get("choice") == "accept":
                c = await service.accept_proposal(p.actor, request_id)
                done = "accepted"
            else:
                c = await service.counter(p.actor, request_id, _times(f, "preferred"))
                done = "countered"
            if back_to_queue and c.department_id:
                return f"/console?department={quote(c.department_id)}&done={done}"
            return _consultation_url(c.id, done)

        consultation_id = None
        if not back_to_queue:
            p = await page(request)
            try:
                found = await p.service.clinic.requests.get(p.actor, request_id)
                consultation_id = found.consultation_id
            except RecordError:
                consultation_id = None
        return await _act(request, consultation_id, action)

    return handler


# ------------------------------------------------------------------ a consultation


def _on_consultation(
    body: Callable[[Page, Form, str], Awaitable[str]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        consultation_id = request.match_info["consultation"]

        async def action(p: Page, f: Form) -> str:
            return await body(p, f, consultation_id)

        return await _act(request, consultation_id, action)

    return handler


async def _reschedule(p: Page, f: Form, consultation_id: str) -> str:
    minutes = _int(f.get("minutes") or "30", "minutes")
    await p.service.reschedule(p.actor, consultation_id, _time(f, "start"), minutes)
    return _consultation_url(consultation_id, "rescheduled")


async def _invite(p: Page, f: Form, consultation_id: str) -> str:
    invitation = await p.service.invite(
        p.actor, consultation_id, f.get("role") or "patient", f.get("name", 400)
    )
    # Straight to the link's QR code and printable page.
    return f"/console/invitations/{quote(invitation.id)}/print"


async def _add_staff(p: Page, f: Form, consultation_id: str) -> str:
    await p.service.add_staff(p.actor, consultation_id, f.get("staff"))
    return _consultation_url(consultation_id, "staff_added")


async def _attach(p: Page, f: Form, consultation_id: str) -> str:
    files = [part for part in f.files if part.name == "attachments" and part.data]
    await p.service.attach(p.actor, consultation_id, files)
    return _consultation_url(consultation_id, "attached")


async def _join(p: Page, f: Form, consultation_id: str) -> str:
    return await p.service.join(p.member, consultation_id, "")


async def _opinion(p: Page, f: Form, consultation_id: str) -> str:
    fields = OpinionFields.checked(
        findings=f.get("findings", _MAX_TEXT + 1),
        impression=f.get("impression", _MAX_TEXT + 1),
        recommendations=f.get("recommendations", _MAX_TEXT + 1),
        follow_up=f.get("follow_up", _MAX_TEXT + 1),
    )
    await p.service.file_opinion(p.member, consultation_id, fields, f.get("supersedes") or None)
    return _consultation_url(consultation_id, "opinion")


async def add_bed(request: web.Request) -> web.Response:
    """A bed added to a ward round's agenda (the API's rule and checks: ward_api.add)."""
    consultation_id = request.match_info["consultation"]

    async def action(p: Page, f: Form) -> str:
        try:
            fields = ward_api.NewBed(
                label=f.get("label", MAX_LABEL + 1).strip(),
                patient_ref=f.get("patient_ref", MAX_PATIENT_REF + 1).strip(),
                note=f.get("note", MAX_NOTE + 1).strip(),
            )
        except ValidationError:
            raise InvalidInput(
                f"a bed needs a label of at most {MAX_LABEL} characters, a patient reference "
                f"of at most {MAX_PATIENT_REF} and a note of at most {MAX_NOTE}"
            ) from None
        await ward_api.add(p.service, p.actor, p.member, request, consultation_id, fields)
        return _consultation_url(consultation_id, "bed_added") + "#ward-summary"

    return await _act(request, consultation_id, action)


async def remove_bed(request: web.Request) -> web.Response:
    consultation_id = request.match_info["consultation"]
    bed_id = request.match_info["bed"]

    async def action(p: Page, f: Form) -> str:
        await ward_api.remove(p.service, p.actor, p.member, request, consultation_id, bed_id)
        return _consultation_url(consultation_id, "bed_removed") + "#ward-summary"

    return await _act(request, consultation_id, action)


async def acknowledge(request: web.Request) -> web.Response:
    opinion_id = request.match_info["opinion"]

    async def action(p: Page, f: Form) -> str:
        opinion = await p.service.acknowledge(p.actor, opinion_id)
        if f.get("back") == "opinion":
            return f"/console/opinions/{quote(opinion.id)}?done=acknowledged"
        return _consultation_url(opinion.consultation_id, "acknowledged")

    return await _act(request, None, action)


def setup(app: web.Application) -> None:
    add = app.router.add_post
    add("/console/consultations", start_now)
    add("/console/requests", new_request)
    for verb in ("accept", "propose", "decline", "answer"):
        add(f"/console/requests/{{request}}/{verb}", _decision(verb))
    add("/console/consultations/{consultation}/appointment", _on_consultation(_reschedule))
    add("/console/consultations/{consultation}/invitations", _on_consultation(_invite))
    add("/console/consultations/{consultation}/staff", _on_consultation(_add_staff))
    add("/console/consultations/{consultation}/attachments", _on_consultation(_attach))
    add("/console/consultations/{consultation}/join", _on_consultation(_join))
    add("/console/consultations/{consultation}/opinions", _on_consultation(_opinion))
    add("/console/consultations/{consultation}/agenda", add_bed)
    add("/console/consultations/{consultation}/agenda/{bed}/remove", remove_bed)
    add("/console/opinions/{opinion}/acknowledge", acknowledge)
