"""Nursing-home terminals in the consoles.

The admin console of a nursing home pairs a terminal (the code it shows and a label),
sets its auto-answer and revokes it; the home's doctors and nurses see its terminals on
their console and call them. Both lists show each terminal online or offline and when it
was last called, refreshed live (the ``terminals`` change notice). Forms post and redirect
back, like the rest of the consoles; what is allowed is decided in rooms/records/terminals.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from rooms.records.errors import RecordError
from rooms.records.sites import Site, SiteKind
from rooms.records.staff import StaffMember
from rooms.records.terminals import AUTO_ANSWER_CHOICES, Terminal, TooManyAttempts
from signaling.console import admin
from signaling.console.desk_pages import (
    Page,
    page,
    render_consultation,
    render_home,
    status_of,
)
from signaling.console.forms import form
from signaling.terminal.api import TERMINALS
from signaling.terminal.service import TerminalService

_MAX_FIELD = 200
# The refusals the admin console words (web/i18n: console.error.terminal.*).
_ADMIN_ERRORS = frozenset(
    {"wrong_code", "expired_code", "too_many_attempts", "not_nursing_home", "invalid",
     "not_found", "forbidden", "busy"}
)  # fmt: skip


async def _rows(service: TerminalService, terminals: list[Terminal]) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    rows = []
    for t in terminals:
        online = t.active and t.paired and service.online(t, now)
        in_call = t.active and t.paired and not online and await service.in_call(t)
        if not t.active:
            state = "revoked"
        elif not t.paired:
            state = "pairing"
        else:
            state = "online" if online else "in_call" if in_call else "offline"
        rows.append(
            {
                "id": t.id,
                "label": t.label,
                "active": t.active,
                "paired": t.paired,
                "online": online,
                "state": state,
                "auto_answer": t.auto_answer_s,
                "last_called": t.last_called_at,
                "last_seen": t.last_seen_at,
            }
        )
    return rows


async def admin_context(
    request: web.Request, member: StaffMember, site: Site | None
) -> dict[str, Any]:
    """What the admin console shows of a nursing home's terminals."""
    if site is None or site.kind is not SiteKind.nursing_home:
        return {"terminals": None}
    service = request.app[TERMINALS]
    listed = await service.records.list(member.actor, site.id)
    return {
        "terminals": await _rows(service, listed),
        "auto_answer_choices": AUTO_ANSWER_CHOICES,
    }


async def desk_context(request: web.Request, p: Page) -> dict[str, Any]:
    """What a doctor's or nurse's console shows of their home's terminals."""
    site_id = p.member.site_id
    if site_id is None:
        return {"terminals": None}
    site = await p.service.frontdesk.desk.sites.get(site_id)
    if site.kind is not SiteKind.nursing_home:
        return {"terminals": None}
    service = request.app[TERMINALS]
    return {"terminals": await _rows(service, await service.records.list(p.actor, site_id))}


async def consultation_context(
    request: web.Request, p: Page, consultation_id: str, may_invite: bool
) -> dict[str, Any]:
    """The home's terminals a doctor or nurse may call into this consultation: one the home
    runs, whose appointment is on."""
    if not may_invite:
        return {"call_terminals": []}
    c = await p.service.clinic.consultations.get(p.actor, consultation_id)
    site = await p.service.frontdesk.desk.sites.get(c.site_id)
    if site.kind is not SiteKind.nursing_home or p.member.site_id != c.site_id:
        return {"call_terminals": []}
    service = request.app[TERMINALS]
    listed = await service.records.list(p.actor, c.site_id)
    rows = await _rows(service, listed)
    return {"call_terminals": [r for r in rows if r["active"] and r["paired"]]}


# ------------------------------------------------------------------ admin actions


def _admin_action(
    act: Callable[[TerminalService, StaffMember, str, Any], Awaitable[str]], done: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        service, member = await admin._admin(request)
        f = await request.post()
        site_field = f.get("site")
        site_id = site_field[:64] if isinstance(site_field, str) else None
        try:
            site_id = await act(request.app[TERMINALS], member, request.match_info["id"], f)
        except RecordError as exc:
            status = 429 if isinstance(exc, TooManyAttempts) else status_of(exc)
            code = exc.code if exc.code in _ADMIN_ERRORS else "invalid"
            return await admin._render_admin(
                request, service, member, site_id, status=status, error=f"terminal.{code}"
            )
        query = urlencode({"site": site_id, "done": done})
        raise web.HTTPSeeOther(f"/console/admin?{query}#terminals")

    return handler


def _field(f: Any, name: str) -> str:
    value = f.get(name)
    return value[:_MAX_FIELD] if isinstance(value, str) else ""


async def _pair(s: TerminalService, me: StaffMember, site_id: str, f: Any) -> str:
    await s.pair(me, site_id, _field(f, "code"), _field(f, "label"),
                 _field(f, "auto_answer") or "0")  # fmt: skip
    return site_id


async def _revoke(s: TerminalService, me: StaffMember, terminal_id: str, f: Any) -> str:
    return (await s.revoke(me, terminal_id)).site_id


async def _auto_answer(s: TerminalService, me: StaffMember, terminal_id: str, f: Any) -> str:
    await s.set_auto_answer(me, terminal_id, _field(f, "auto_answer"))
    return (await s.records.get(terminal_id)).site_id


# ------------------------------------------------------------------ calling


async def call(request: web.Request) -> web.Response:
    """A doctor or nurse of the home calls a terminal: the terminal rings, the caller's own
    call page opens."""
    p = await page(request)
    f = await form(request)
    consultation_id = f.get("consultation", 64) or None
    try:
        url = await request.app[TERMINALS].call(p.member, request.match_info["id"], consultation_id)
    except RecordError as exc:
        if consultation_id is not None:
            return await render_consultation(
                request, p, consultation_id, status=status_of(exc), error=exc
            )
        return await render_home(request, p, status=status_of(exc), error=exc)
    raise web.HTTPSeeOther(url)


def setup(app: web.Application) -> None:
    add = app.router.add_post
    add("/console/admin/sites/{id}/terminals", _admin_action(_pair, "terminal_paired"))
    add("/console/admin/terminals/{id}/revoke", _admin_action(_revoke, "terminal_revoked"))
    add("/console/admin/terminals/{id}/auto-answer",
        _admin_action(_auto_answer, "terminal_settings"))  # fmt: skip
    add("/console/terminals/{id}/call", call)
