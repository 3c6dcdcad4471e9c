"""The terminal's page (``/terminal``) and its endpoints (``/api/terminal/...``).

No login: the page asks for a pairing code, shows it, and polls with the pairing's ticket
until a site admin has entered the code; the answer that says "paired" sets the device
credential as a cookie. From then on the terminal is authenticated by that cookie alone.

Where the credential is kept: an **HttpOnly cookie** (``tc_terminal``; SameSite=Strict,
Path=/api/terminal, Secure under TLS, 400 days: the most browsers keep one), not
localStorage. Script on the page, even injected script, cannot read it, so it cannot be
copied off the device; it survives reloads and power cuts; and the browser sends it on the
event stream by itself (``EventSource`` cannot send headers). Cookie-authenticated writes
take ``application/json`` only (a cross-site form cannot send it without a preflight, which
this server never allows) from the same origin, and the cookie is SameSite=Strict.

A revoked or unknown credential gets ``401 {"error": "revoked"}`` everywhere (no credential
at all: ``"unpaired"``), and the page shows that it needs pairing again; ``/api/terminal/me``
also clears the dead cookie.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rooms.records.errors import NotFound, RecordError
from rooms.records.terminals import Busy, Terminal
from signaling.http import appkeys, openapi
from signaling.http.openapi import Content, Operation
from signaling.http.pages import page_language, render
from signaling.terminal.service import TerminalService
from web.i18n import messages

COOKIE = "tc_terminal"
COOKIE_PATH = "/api/terminal"
COOKIE_MAX_AGE_S = 400 * 24 * 3600
PREFIX = "/api/terminal"
# Every this many seconds the stream sends a heartbeat, re-checks the credential (a
# revocation made on another node ends it within one beat) and notes the terminal alive.
HEARTBEAT_S = 15.0
_SEND_TIMEOUT_S = 10.0
_WATCH_S = 1.0
# Pairings a client address may start per minute: the page starts one every 10 minutes, but
# a home's terminals share one address and may all be switched on at once (the others back
# off and try again).
PAIRINGS_PER_MINUTE = 20
_NO_STORE = {"Cache-Control": "no-store"}

TERMINALS: web.AppKey[TerminalService] = web.AppKey("terminals", TerminalService)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PairingOut(_Model):
    """A new pairing: the code to show, the ticket to poll with (keep it in memory)."""

    pairing: str
    code: str
    ticket: str
    expires_at: datetime


class CollectIn(_Model):
    ticket: str = Field(max_length=128)


class TerminalOut(_Model):
    id: str
    label: str
    site: str
    auto_answer: int


class CollectOut(_Model):
    """``paired`` also sets the device credential cookie; ``expired``: start again."""

    state: Literal["waiting", "paired", "expired"]
    terminal: TerminalOut | None = None


class AnswerIn(_Model):
    auto: bool = False


class DoneOut(_Model):
    ok: bool


class ErrorOut(_Model):
    error: str
    message: str


_ERRORS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    415: web.HTTPUnsupportedMediaType,
    429: web.HTTPTooManyRequests,
    503: web.HTTPServiceUnavailable,
}


def _error(status: int, code: str, message: str) -> web.HTTPException:
    return _ERRORS[status](
        text=json.dumps({"error": code, "message": message}),
        content_type="application/json",
        headers=_NO_STORE,
    )


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json",
        headers=_NO_STORE,
    )  # fmt: skip


async def _out(service: TerminalService, terminal: Terminal) -> TerminalOut:
    site = await service.clinic.frontdesk.desk.sites.get(terminal.site_id)
    return TerminalOut(
        id=terminal.id, label=terminal.label, site=site.name, auto_answer=terminal.auto_answer_s
    )


async def _terminal(request: web.Request) -> Terminal:
    credential = request.cookies.get(COOKIE)
    terminal = await request.app[TERMINALS].records.authenticate(credential)
    if terminal is None:
        if credential:
            # A credential that was revoked (or never was): the page says "pair me again".
            raise _error(401, "revoked", "this terminal's credential is revoked or unknown")
        raise _error(401, "unpaired", "this terminal is not paired")
    return terminal


M = TypeVar("M", bound=BaseModel)


async def _body(request: web.Request, model: type[M]) -> M:
    if request.content_type != "application/json":
        raise _error(415, "unsupported", "send application/json")
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise _error(403, "forbidden", "from this server's own pages only")
    raw = await request.read()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError:
        raise _error(400, "invalid", "the body is not what this endpoint takes") from None


# ------------------------------------------------------------------ the page


async def terminal_page(request: web.Request) -> web.Response:
    # zh-CN unless the URL asks otherwise: the residents read Chinese, and a terminal's
    # browser is often left in English by whoever set the tablet up.
    lang = request.query.get("lang")
    lang = page_language(request) if lang in ("en", "zh-CN") else "zh-CN"
    t = messages(lang)
    boot = {
        "lang": lang,
        "messages": {k: v for k, v in t.items() if k.startswith(("terminal.", "role."))},
    }
    return render("terminal.html", 200, lang=lang, t=t, boot=boot)


# ------------------------------------------------------------------ pairing


class _AddressLimit:
    """At most ``limit`` per address per minute (a bounded table, oldest addresses out)."""

    def __init__(self, limit: int, size: int = 10_000) -> None:
        self.limit = limit
        self.size = size
        self._seen: dict[str, list[float]] = {}

    def allow(self, address: str) -> bool:
        now = time.monotonic()
        recent = [t for t in self._seen.pop(address, []) if now - t < 60.0]
        allowed = len(recent) < self.limit
        if allowed:
            recent.append(now)
        self._seen[address] = recent
        while len(self._seen) > self.size:
            del self._seen[next(iter(self._seen))]
        return allowed


_LIMIT: web.AppKey[_AddressLimit] = web.AppKey("terminal_pairing_limit", _AddressLimit)


async def start_pairing(request: web.Request) -> web.Response:
    if not request.app[_LIMIT].allow(request.remote or ""):
        raise _error(429, "rate_limited", "too many pairing codes asked for: wait a minute")
    try:
        pairing = await request.app[TERMINALS].start_pairing()
    except Busy as exc:
        raise _error(503, exc.code, str(exc)) from None
    return _json(
        PairingOut(pairing=pairing.id, code=pairing.code, ticket=pairing.ticket,
                   expires_at=pairing.expires_at),
        201,
    )  # fmt: skip


async def collect(request: web.Request) -> web.Response:
    body = await _body(request, CollectIn)
    service = request.app[TERMINALS]
    try:
        got = await service.collect(body.ticket)
    except NotFound:
        raise _error(404, "not_found", "no such pairing: start again") from None
    if got.terminal is None or got.credential is None:
        return _json(CollectOut(state=got.state))
    response = _json(CollectOut(state="paired", terminal=await _out(service, got.terminal)))
    config = request.app[appkeys.CONFIG]
    secure = request.secure or (config.public_url or "").startswith("https:")
    response.set_cookie(
        COOKIE, got.credential, max_age=COOKIE_MAX_AGE_S, path=COOKIE_PATH,
        httponly=True, samesite="Strict", secure=secure,
    )  # fmt: skip
    return response


# ------------------------------------------------------------------ the paired terminal


async def me(request: web.Request) -> web.Response:
    try:
        terminal = await _terminal(request)
    except web.HTTPException as exc:
        if exc.status_code == 401:
            exc.del_cookie(COOKIE, path=COOKIE_PATH)
        raise
    return _json(await _out(request.app[TERMINALS], terminal))


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``hello`` (who this terminal is), ``heartbeat`` every 15 s,
    ``ring`` (a call), ``settings`` (auto-answer changed), ``revoked`` (then the stream
    ends). The page reconnects by itself; a 401 means pair again."""
    service = request.app[TERMINALS]
    terminal = await _terminal(request)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no", **_NO_STORE}
    )
    await response.prepare(request)
    hello = (await _out(service, terminal)).model_dump_json()
    try:
        if await _serve_stream(request, service, terminal, response, hello):
            with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
                await asyncio.wait_for(response.write_eof(), _SEND_TIMEOUT_S)
    finally:
        # Out of the hub first, so the terminal is shown offline unless another stream of
        # it is open here.
        with contextlib.suppress(Exception):
            await service.disconnected(terminal)
    return response


async def _serve_stream(
    request: web.Request,
    service: TerminalService,
    terminal: Terminal,
    response: web.StreamResponse,
    hello: str,
) -> bool:
    """Until revoked, cut or gone; False if the terminal went (nothing more to send)."""
    async with service.hub.connect(terminal.id) as queue:
        await service.connected(terminal)
        try:
            await _send(response, f"retry: 2000\nevent: hello\ndata: {hello}\n\n")
            beat = time.monotonic() + HEARTBEAT_S
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), _WATCH_S)
                except TimeoutError:
                    # A terminal that went (its socket closed) is seen offline within a
                    # second, not at the next write; checking the socket costs no I/O.
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        return False
                    if time.monotonic() < beat:
                        continue
                    beat = time.monotonic() + HEARTBEAT_S
                    if not await service.heartbeat(terminal):
                        await _send(response, 'event: revoked\ndata: {"type":"revoked"}\n\n')
                        return True
                    await _send(response, "event: heartbeat\ndata: {}\n\n")
                    continue
                if event is None:
                    return True
                name = str(event.get("type", "message"))
                await _send(response, f"event: {name}\ndata: {json.dumps(event)}\n\n")
        except (ConnectionError, TimeoutError):
            return False


async def _send(response: web.StreamResponse, text: str) -> None:
    await asyncio.wait_for(response.write(text.encode("utf-8")), _SEND_TIMEOUT_S)


def _on_call(
    act: Callable[[TerminalService, Terminal, str, AnswerIn], Awaitable[None]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        body = await _body(request, AnswerIn)
        terminal = await _terminal(request)
        try:
            await act(request.app[TERMINALS], terminal, request.match_info["call"], body)
        except NotFound:
            raise _error(404, "not_found", "no such call") from None
        except RecordError as exc:
            raise _error(400, exc.code, str(exc)) from None
        return _json(DoneOut(ok=True))

    return handler


async def _answer(s: TerminalService, t: Terminal, call_id: str, body: AnswerIn) -> None:
    await s.answer(t, call_id, auto=body.auto)


async def _decline(s: TerminalService, t: Terminal, call_id: str, body: AnswerIn) -> None:
    await s.decline(t, call_id)


def setup(app: web.Application, service: TerminalService) -> None:
    app[TERMINALS] = service
    app[_LIMIT] = _AddressLimit(PAIRINGS_PER_MINUTE)
    app.router.add_get("/terminal", terminal_page)
    api = openapi.routes(app)
    cookie = ("terminalCredential",)
    errors = {401: ErrorOut}
    api.add(app, Operation("POST", f"{PREFIX}/pairings", "Start pairing: a code to show",
                           {201: PairingOut, 429: ErrorOut, 503: ErrorOut}, tag="terminal"),
            start_pairing)  # fmt: skip
    api.add(app, Operation("POST", f"{PREFIX}/pairings/collect",
                           "Poll a pairing; once paired, sets the device credential cookie",
                           {200: CollectOut, 400: ErrorOut, 404: ErrorOut, 415: ErrorOut},
                           body=CollectIn, tag="terminal"),
            collect)  # fmt: skip
    api.add(app, Operation("GET", f"{PREFIX}/me", "This terminal: its site and settings",
                           {200: TerminalOut, **errors}, security=cookie, tag="terminal"),
            me)  # fmt: skip
    api.add(app, Operation("GET", f"{PREFIX}/events",
                           "The terminal's event stream (Server-Sent Events): heartbeats, "
                           "calls, revocation",
                           {200: Content("text/event-stream", "hello, heartbeat, ring, settings, "
                                         "revoked events"), **errors},
                           security=cookie, tag="terminal"),
            events)  # fmt: skip
    app.on_shutdown.append(_close_streams)
    for verb, act in (("answer", _answer), ("decline", _decline)):
        api.add(app, Operation("POST", f"{PREFIX}/calls/{{call}}/{verb}",
                               f"{verb.capitalize()} a call that is ringing",
                               {200: DoneOut, 400: ErrorOut, 404: ErrorOut, 415: ErrorOut,
                                **errors},
                               body=AnswerIn, security=cookie, tag="terminal"),
                _on_call(act))  # fmt: skip


async def _close_streams(app: web.Application) -> None:
    # Open streams end now, not at the shutdown timeout; the terminals reconnect elsewhere.
    app[TERMINALS].hub.close_all()
