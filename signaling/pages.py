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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import jinja2
from aiohttp import web

from signaling import appkeys, tokens
from web.i18n import choose_language, messages

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "web" / "static"

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


async def join_page(request: web.Request) -> web.Response:
    lang = _language(request)
    msgs = messages(lang)
    token = request.match_info["token"]
    config = request.app[appkeys.CONFIG]
    try:
        grant = tokens.verify(config.secret, token)
    except tokens.TokenError as exc:
        reason = "expired" if isinstance(exc, tokens.ExpiredToken) else "invalid"
        return _render("error.html", 401, lang=lang, t=msgs, reason=reason)

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
