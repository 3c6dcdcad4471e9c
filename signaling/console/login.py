"""``/login`` and ``/logout`` for staff.

Every failure (wrong password, unknown user, disabled or locked account, back-off, too many
logins at once) shows the same message with the same status, and every attempt is audited
with its outcome, the account's opaque id if the username named one, and the client
address; never the username as typed (it may be a password in the wrong field) nor a name.
"""

from __future__ import annotations

from aiohttp import web

from signaling.http import appkeys
from signaling.http.pages import page_language, render
from web.i18n import messages

# Form fields are bounded before anything looks at them.
_MAX_FIELD = 1024


async def login_form(request: web.Request) -> web.Response:
    service = request.app[appkeys.FRONTDESK]
    if await service.sessions.current(request) is not None:
        raise web.HTTPSeeOther("/console")
    return await _render_login(request, 200, failed=False)


async def login(request: web.Request) -> web.Response:
    service = request.app[appkeys.FRONTDESK]
    form = await request.post()
    username, password = form.get("username"), form.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        return await _render_login(request, 400, failed=True)
    result = await service.desk.authenticator.login(
        username[:_MAX_FIELD], password[:_MAX_FIELD], request.remote
    )
    member = result.member
    service.record(
        "staff_login",
        None,
        outcome=result.outcome.value,
        staff=member.id if member else None,
        site=member.site_id if member else None,
        addr=request.remote,
    )
    if not result.ok or member is None:
        return await _render_login(request, 401, failed=True)
    await service.sessions.start(request, member)
    raise web.HTTPSeeOther("/console")


async def logout(request: web.Request) -> web.Response:
    service = request.app[appkeys.FRONTDESK]
    member = await service.sessions.current(request)
    await service.sessions.end(request)
    if member is not None:
        service.record("staff_logout", member, site=member.site_id)
    raise web.HTTPSeeOther("/login")


async def _render_login(request: web.Request, status: int, *, failed: bool) -> web.Response:
    lang = page_language(request)
    csrf = await request.app[appkeys.FRONTDESK].sessions.csrf_token(request)
    return render("login.html", status, lang=lang, t=messages(lang), csrf=csrf, failed=failed)


def setup(app: web.Application) -> None:
    app.router.add_get("/login", login_form, name="login")
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout, name="logout")
