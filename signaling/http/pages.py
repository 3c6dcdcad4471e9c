"""The browser-facing pages: ``GET /join/{token}`` (join view + call view) and ``/static/``.

The join URL carries the signed token, so every page response is ``no-store`` and sends
no referrer, and the token is never echoed on the error page. Display names are user input:
templates are rendered with autoescape on, and the data handed to the script goes through
``tojson`` (which escapes ``<``, ``>``, ``&`` and quotes) inside a non-executable JSON block,
so the strict CSP below can forbid inline script altogether.

Query parameters of the join page:
- ``lang=en|zh-CN`` overrides ``Accept-Language`` (web/i18n.py).
- ``autojoin=1`` joins as soon as the camera is ready, with the ordinary layout (embedding
  systems and the tests use it).
- ``kiosk=1`` is kiosk mode, for a shared terminal (a nursing home, a ward trolley) that the
  patient works by touch: the page gets the ``kiosk`` body class, which makes the consent
  dialog's Yes / No buttons extra large, and it joins by itself (``kiosk=1`` implies
  ``autojoin=1``; ``autojoin=1`` alone does not change the layout).
- ``terminal=1``: opened by a nursing-home terminal (docs/terminals.md); when the call
  ends, the page goes back to the terminal's home screen (``/terminal``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import jinja2
from aiohttp import web

from signaling import tokens
from signaling.http import appkeys
from web.i18n import choose_language, messages

STATIC_DIR: Final = Path(__file__).resolve().parents[2] / "web" / "static"

CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob: mediastream:",
        "connect-src 'self' ws: wss:",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "camera=(self), microphone=(self), geolocation=()",
}

_env: jinja2.Environment | None = None


def _environment() -> jinja2.Environment:
    global _env
    if _env is None:
        _env = jinja2.Environment(
            loader=jinja2.PackageLoader("web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _env


def _render(template: str, status: int, **context: Any) -> web.Response:
    body = _environment().get_template(template).render(**context)
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers=PAGE_HEADERS,
    )


def _language(request: web.Request) -> str:
    return choose_language(request.headers.get("Accept-Language"), request.query.get("lang"))


def _role_label(msgs: dict[str, str], role: str) -> str:
    return msgs.get(f"role.{role}", msgs["role.unknown"])


def _refusal(exc: tokens.TokenError) -> str:
    """Which error page: each kind of unusable link says something different (a link that
    is early gets its own, with the time to come back: ``join_page``)."""
    if isinstance(exc, tokens.ExpiredToken):
        return "expired"
    if isinstance(exc, tokens.RevokedToken):
        return "ended" if exc.ended else "revoked"
    return "invalid"


async def _early(request: web.Request, token: str) -> str:
    """A link opened before its time: "early", unless it was revoked meanwhile (a withdrawn
    or rescheduled link says so whenever it is opened)."""
    config = request.app[appkeys.CONFIG]
    revocation = request.app.get(appkeys.REVOCATION)
    try:
        grant = tokens.verify(config.secret, token, check_times=False)
        if revocation is not None:
            await revocation.check(grant)
    except tokens.TokenError as exc:
        return _refusal(exc)
    return "early"


def _utc(epoch: float) -> tuple[str, str]:
    at = datetime.fromtimestamp(epoch, UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ"), at.strftime("%Y-%m-%d %H:%M UTC")


async def join_page(request: web.Request) -> web.Response:
    lang = _language(request)
    msgs = messages(lang)
    token = request.match_info["token"]
    config = request.app[appkeys.CONFIG]
    try:
        grant = tokens.verify(config.secret, token)
        revocation = request.app.get(appkeys.REVOCATION)
        if revocation is not None:
            await revocation.check(grant)
    except tokens.TokenError as exc:
        reason, valid_from, valid_from_text = _refusal(exc), "", ""
        if isinstance(exc, tokens.NotYetValidToken) and exc.valid_from is not None:
            # Too early: the page says when to come back, in the reader's own time zone
            # (web/static/localtime.js; UTC without script).
            reason = await _early(request, token)
            valid_from, valid_from_text = _utc(exc.valid_from)
        return _render("error.html", 401, lang=lang, t=msgs, reason=reason,
                       valid_from=valid_from, valid_from_text=valid_from_text)  # fmt: skip

    role = str(grant.role)
    kind = str(grant.kind)
    kiosk = request.query.get("kiosk") == "1"
    boot = {
        "token": token,
        "name": grant.name,
        "role": role,
        "kind": kind,
        "lang": lang,
        "kiosk": kiosk,
        "consultation": grant.consultation_id,
        "messages": msgs,
    }
    return _render(
        "join.html",
        200,
        lang=lang,
        t=msgs,
        name=grant.name,
        role=role,
        role_label=_role_label(msgs, role),
        kind=kind,
        kind_label=msgs.get(f"kind.{kind}", kind),
        kiosk=kiosk,
        boot=boot,
    )


def setup_pages(app: web.Application) -> None:
    """Register the join page and the static files on ``app``."""
    app.router.add_get("/join/{token}", join_page, name="join")
    app.router.add_static("/static/", STATIC_DIR, name="static", append_version=False)


def render(template: str, status: int, **context: Any) -> web.Response:
    """A page with the strict headers above: for the other page modules (login, console)."""
    return _render(template, status, **context)


def page_language(request: web.Request) -> str:
    return _language(request)
