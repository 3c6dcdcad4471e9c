"""The staff console: ``/console`` (by role) and the site admin console ``/console/admin``.

Doctors, nurses and experts get their clinical console at ``/console``
(signaling/console/desk_pages.py); admins are sent to ``/console/admin``.

The admin console manages a site's departments, staff, partnerships and API tokens, and
lists the site's recent audit entries; a platform admin also creates sites and picks any
site. Pages are rendered on the server and every form works without JavaScript (a POST,
then a redirect back); ``/console/events`` pushes change notices (Server-Sent Events) that
web/static/console.js turns into a refetch of the lists, so a second console sees a change
within a second. Every check of who may do what is in the repositories (rooms/records); a
record of another site answers 404, as one that does not exist.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDictProxy

from rooms.records.errors import Duplicate, Forbidden, InvalidInput, NotFound, RecordError
from rooms.records.passwords import Busy
from rooms.records.sites import Site, SiteKind
from rooms.records.staff import StaffMember
from rooms.roles import StaffRole
from signaling.audit.tail import site_entries
from signaling.console import desk_pages
from signaling.console.events import stream
from signaling.console.frontdesk import FrontDeskService, may_see
from signaling.http import appkeys
from signaling.http.pages import page_language, render
from web.i18n import messages

_MAX_FIELD = 1024
_STATUS: dict[type[RecordError], tuple[int, str]] = {
    NotFound: (404, "not_found"),
    Forbidden: (403, "forbidden"),
    Duplicate: (409, "duplicate"),
    InvalidInput: (400, "invalid"),
    Busy: (503, "busy"),
}
_DONE = frozenset(
    {"site", "department", "staff", "disabled", "enabled", "unlocked", "password",
     "partnership", "ended", "revoked", "terminal_paired", "terminal_revoked",
     "terminal_settings"}
)  # fmt: skip

Form = MultiDictProxy[Any]
Action = Callable[[FrontDeskService, StaffMember, Form], Awaitable[tuple[str | None, str]]]


def _is_admin(member: StaffMember) -> bool:
    return member.platform_admin or member.role is StaffRole.admin


async def _staff(request: web.Request) -> tuple[FrontDeskService, StaffMember]:
    service = request.app[appkeys.FRONTDESK]
    member = await service.sessions.current(request)
    if member is None:
        raise web.HTTPSeeOther("/login")
    return service, member


async def _admin(request: web.Request) -> tuple[FrontDeskService, StaffMember]:
    service, member = await _staff(request)
    if not _is_admin(member):
        raise web.HTTPForbidden(text="the admin console is for site admins")
    return service, member


def _field(form: Form, name: str) -> str:
    value = form.get(name)
    return value[:_MAX_FIELD] if isinstance(value, str) else ""


def _admin_url(site_id: str | None, done: str | None = None) -> str:
    query = {k: v for k, v in (("site", site_id), ("done", done)) if v}
    return "/console/admin" + (f"?{urlencode(query)}" if query else "")


# ------------------------------------------------------------------ pages


async def console_home(request: web.Request) -> web.Response:
    """Admins to their console; doctors, nurses and experts to theirs."""
    _, member = await _staff(request)
    if _is_admin(member):
        raise web.HTTPSeeOther("/console/admin")
    return await desk_pages.home(request)


async def admin_page(request: web.Request) -> web.Response:
    service, member = await _admin(request)
    done = request.query.get("done")
    return await _render_admin(
        request, service, member, request.query.get("site"),
        done=done if done in _DONE else None,
    )  # fmt: skip


async def _selected_site(
    service: FrontDeskService, member: StaffMember, site_id: str | None
) -> Site | None:
    sites = service.desk.sites
    if member.platform_admin:
        if site_id:
            return await sites.get(site_id)
        every = await sites.list()
        return every[0] if every else None
    if site_id and site_id != member.site_id:
        raise NotFound("no such site")
    return await sites.get(member.site_id) if member.site_id else None


async def _render_admin(
    request: web.Request,
    service: FrontDeskService,
    member: StaffMember,
    site_id: str | None,
    *,
    status: int = 200,
    done: str | None = None,
    error: str | None = None,
    issued: str | None = None,
) -> web.Response:
    from signaling.console import terminals

    lang = page_language(request)
    t = messages(lang)
    desk = service.desk
    actor = member.actor
    try:
        site = await _selected_site(service, member, site_id)
    except NotFound:
        if error is None:
            raise web.HTTPNotFound(text="no such site") from None
        # A refused action on another site's record: answer on the actor's own page.
        site = await _selected_site(service, member, None)
    every_site = await desk.sites.list()
    names = {s.id: s for s in every_site}
    context: dict[str, Any] = {
        "lang": lang,
        "t": t,
        "me": member,
        "csrf": await service.sessions.csrf_token(request),
        "site": site,
        "sites": every_site if member.platform_admin else [s for s in every_site if s is site],
        "kinds": [k.value for k in SiteKind],
        "roles": [r.value for r in StaffRole],
        "done": done,
        "error": error,
        "issued": issued,
        "refresh_url": _admin_url(site.id if site else None),
        "departments": [],
        "staff": [],
        "locked": {},
        "platform_admins": [],
        "partnerships": [],
        "requesters": [],
        "tokens": [],
        "audit": [],
        "terminals": None,
    }
    if member.platform_admin:
        context["platform_admins"] = await desk.staff.list(actor, None)
    if site is not None:
        now = datetime.now(UTC)
        staff = await desk.staff.list(actor, site.id)
        context["departments"] = await desk.sites.departments(site.id)
        context["staff"] = staff
        context["locked"] = {
            m.id: await desk.throttle.locked_until(m.username, now) for m in staff
        }
        rows = []
        for p in await desk.sites.partnerships(site.id):
            department = await desk.sites.department(p.department_id)
            rows.append(
                {
                    "id": p.id,
                    "serves": p.expert_site_id == site.id,
                    "requester": names[p.requester_site_id].name,
                    "expert": names[p.expert_site_id].name,
                    "department": department.name,
                    "since": p.created_at,
                }
            )
        context["partnerships"] = rows
        context["requesters"] = [s for s in every_site if s.id != site.id]
        context["tokens"] = await desk.api_tokens.list(actor, site.id)
        context.update(await terminals.admin_context(request, member, site))
        context["audit"] = [
            _audit_row(e) for e in await site_entries(service.audit.path, site.id)
        ]
    return render("console_admin.html", status, **context)


_AUDIT_SHOWN_ELSEWHERE = frozenset({"at", "action", "by", "seq", "mac", "site"})


def _audit_row(entry: dict[str, Any]) -> dict[str, Any]:
    at = entry.get("at")
    when = datetime.fromtimestamp(at, UTC) if isinstance(at, int | float) else None
    return {
        "when": when.strftime("%Y-%m-%d %H:%M:%S") if when else "",
        "action": str(entry.get("action", "")),
        "by": entry.get("by"),
        "details": " ".join(
            f"{k}={v}"
            for k, v in sorted(entry.items())
            if k not in _AUDIT_SHOWN_ELSEWHERE and v is not None
        ),
    }


# ------------------------------------------------------------------ actions


async def _apply(request: web.Request, action: Action) -> web.Response:
    service, member = await _admin(request)
    form = await request.post()
    try:
        site_id, done = await action(service, member, form)
    except RecordError as exc:
        status, code = next(v for k, v in _STATUS.items() if isinstance(exc, k))
        return await _render_admin(
            request, service, member, _field(form, "site") or None, status=status, error=code
        )
    raise web.HTTPSeeOther(_admin_url(site_id, done))


async def add_site(request: web.Request) -> web.Response:
    async def action(s: FrontDeskService, me: StaffMember, form: Form) -> tuple[str | None, str]:
        site = await s.desk.sites.create(me.actor, _field(form, "kind"), _field(form, "name"))
        s.record("site_created", me, site=site.id, kind=site.kind.value)
        s.changed("sites", site.id)
        return site.id, "site"

    return await _apply(request, action)


async def add_department(request: web.Request) -> web.Response:
    site_id = request.match_info["site"]

    async def action(s: FrontDeskService, me: StaffMember, form: Form) -> tuple[str | None, str]:
        dept = await s.desk.sites.add_department(me.actor, site_id, _field(form, "name"))
        s.record("department_added", me, site=site_id, department=dept.id)
        s.changed("departments", site_id)
        return site_id, "department"

    return await _apply(request, action)


async def add_staff(request: web.Request) -> web.Response:
    site_id = request.match_info["site"]

    async def action(s: FrontDeskService, me: StaffMember, form: Form) -> tuple[str | None, str]:
        added = await s.desk.staff.add(
            me.actor,
            username=_field(form, "username"),
            display_name=_field(form, "display_name"),
            password=_field(form, "password"),
            role=_field(form, "role"),
            site_id=site_id,
        )
        s.record("staff_added", me, site=site_id, staff=added.id, role=added.role.value)
        s.changed("staff", site_id)
        return site_id, "staff"

    return await _apply(request, action)


def _staff_action(verb: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        staff_id = request.match_info["staff"]

        async def action(
            s: FrontDeskService, me: StaffMember, form: Form
        ) -> tuple[str | None, str]:
            staff = s.desk.staff
            target = await staff.manageable(me.actor, staff_id)
            if verb == "disable":
                await staff.disable(me.actor, staff_id)
                done = "disabled"
            elif verb == "enable":
                await staff.enable(me.actor, staff_id)
                done = "enabled"
            elif verb == "unlock":
                await s.desk.throttle.unlock(target.username)
                done = "unlocked"
            else:
                await staff.set_password(me.actor, staff_id, _field(form, "password"))
                done = "password"
            s.record(f"staff_{done}", me, site=target.site_id, staff=staff_id)
            s.changed("staff", target.site_id)
            return target.site_id, done

        return await _apply(request, action)

    return handler


async def add_partnership(request: web.Request) -> web.Response:
    site_id = request.match_info["site"]

    async def action(s: FrontDeskService, me: StaffMember, form: Form) -> tuple[str | None, str]:
        department = await s.desk.sites.department(_field(form, "department"))
        if department.site_id != site_id:
            raise NotFound("no such department at this site")
        p = await s.desk.sites.partner(me.actor, _field(form, "requester"), department.id)
        s.record("partnership_created", me, site=site_id, partnership=p.id,
                 requester=p.requester_site_id, department=p.department_id)  # fmt: skip
        s.changed("partnerships", site_id, p.requester_site_id)
        return site_id, "partnership"

    return await _apply(request, action)


async def end_partnership(request: web.Request) -> web.Response:
    partnership_id = request.match_info["partnership"]

    async def action(s: FrontDeskService, me: StaffMember, form: Form) -> tuple[str | None, str]:
        p = await s.desk.sites.partnership(partnership_id)
        s.desk.sites.require_visible(me.actor, p)
        p = await s.desk.sites.end_partnership(me.actor, partnership_id)
        s.record("partnership_ended", me, site=p.expert_site_id, partnership=p.id,
                 requester=p.requester_site_id)  # fmt: skip
        s.changed("partnerships", p.expert_site_id, p.requester_site_id)
        return p.expert_site_id, "ended"

    return await _apply(request, action)


async def issue_token(request: web.Request) -> web.Response:
    service, member = await _admin(request)
    site_id = request.match_info["site"]
    form = await request.post()
    try:
        issued = await service.desk.api_tokens.issue(member.actor, site_id, _field(form, "label"))
    except RecordError as exc:
        status, code = next(v for k, v in _STATUS.items() if isinstance(exc, k))
        return await _render_admin(request, service, member, site_id, status=status, error=code)
    service.record("api_token_issued", member, site=site_id, token=issued.token.id)
    service.changed("api_tokens", site_id)
    # Shown in this response only (never in a URL, a log or the audit log).
    return await _render_admin(request, service, member, site_id, issued=issued.secret)


async def revoke_token(request: web.Request) -> web.Response:
    token_id = request.match_info["token"]

    async def action(s: FrontDeskService, me: StaffMember, form: Form) -> tuple[str | None, str]:
        token = await s.desk.api_tokens.revoke(me.actor, token_id)
        s.record("api_token_revoked", me, site=token.site_id, token=token.id)
        s.changed("api_tokens", token.site_id)
        return token.site_id, "revoked"

    return await _apply(request, action)


async def own_password(request: web.Request) -> web.Response:
    """Change your own password: every other session of the account ends, this one goes on."""
    service, member = await _staff(request)
    form = await request.post()
    try:
        updated = await service.desk.staff.set_password(
            member.actor, member.id, _field(form, "new_password"),
            current_password=_field(form, "current_password"),
        )  # fmt: skip
    except RecordError as exc:
        status, code = next(v for k, v in _STATUS.items() if isinstance(exc, k))
        if _is_admin(member):
            return await _render_admin(request, service, member, None, status=status, error=code)
        return await desk_pages.render_home(
            request, await desk_pages.page(request), status=status, error=exc
        )
    await service.sessions.start(request, updated)
    service.record("staff_password", member, site=member.site_id, staff=member.id)
    raise web.HTTPSeeOther(_admin_url(None, "password") if _is_admin(member) else
                           "/console?done=password")  # fmt: skip


async def events(request: web.Request) -> web.StreamResponse:
    service = request.app[appkeys.FRONTDESK]
    member = await service.sessions.current(request)
    if member is None:
        raise web.HTTPUnauthorized(text="log in first")

    async def still_valid() -> bool:
        try:
            fresh = await service.desk.staff.get(member.id)
        except NotFound:
            return False
        return not fresh.disabled and fresh.session_generation == member.session_generation

    return await stream(request, service.events, lambda c: may_see(member, c), still_valid)


def setup(app: web.Application) -> None:
    add = app.router.add_post
    app.router.add_get("/console", console_home, name="console")
    app.router.add_get("/console/admin", admin_page, name="console_admin")
    app.router.add_get("/console/events", events)
    add("/console/password", own_password)
    add("/console/admin/sites", add_site)
    add("/console/admin/sites/{site}/departments", add_department)
    add("/console/admin/sites/{site}/staff", add_staff)
    add("/console/admin/sites/{site}/partnerships", add_partnership)
    add("/console/admin/sites/{site}/api-tokens", issue_token)
    add("/console/admin/partnerships/{partnership}/end", end_partnership)
    add("/console/admin/api-tokens/{token}/revoke", revoke_token)
    for verb in ("disable", "enable", "unlock", "password"):
        add(f"/console/admin/staff/{{staff}}/{verb}", _staff_action(verb))
