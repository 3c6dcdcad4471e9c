"""Staff sessions: an encrypted cookie (aiohttp-session), checked against the staff row, and
CSRF protection for everything the cookie authorizes.

The cookie (``tc_staff``: HttpOnly, SameSite=Strict, Secure under TLS) holds the staff id,
the account's session generation, when it was issued and last seen, and a CSRF token. It is
encrypted and authenticated (Fernet) under a key derived from the master key, so it cannot
be read or forged. A session ends after 12 h, or 30 min without a request; and whenever the
account's generation moves on (logout, password change, disabling), which kills every copy
of every cookie of the account, since a cookie store has nothing else on the server to
delete.

CSRF: a random token per session, required as the ``csrf`` form field or the
``X-CSRF-Token`` header on every POST/PUT/PATCH/DELETE under /login, /logout, /console and
/api/frontdesk; otherwise 403. The login form gets one before anyone logs in (login CSRF).
A request to /api/frontdesk with ``Authorization: Bearer`` needs none: it is authorized by
a site's API token, never by the cookie (signaling/console/api.py).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp_session
from aiohttp import web
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from rooms.records.errors import NotFound
from rooms.records.staff import Staff, StaffMember
from signaling.console.forms import form

log = logging.getLogger(__name__)

COOKIE = "tc_staff"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
ABSOLUTE_S = 12 * 3600
IDLE_S = 30 * 60
# "Last seen" is rewritten (a new cookie) at most this often, not on every request.
_SEEN_GRANULARITY_S = 60
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_PROTECTED = ("/login", "/logout", "/console", "/api/frontdesk")
_BEARER_ALLOWED = ("/api/frontdesk",)
_INFO = b"teleconsult staff session cookies v1"
_REQUEST_MEMBER: web.RequestKey[StaffMember | None] = web.RequestKey("tc_staff_member")


def cookie_key(master_key: bytes) -> bytes:
    """32 bytes for Fernet (16 to sign, 16 to encrypt), derived from the master key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(master_key)


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def _protected(request: web.Request) -> bool:
    if request.method in _SAFE or not _under(request.path, _PROTECTED):
        return False
    # A site's API token authorizes these, not the cookie; browsers never add the header
    # by themselves.
    bearer = request.headers.get("Authorization", "").lower().startswith("bearer ")
    return not (bearer and _under(request.path, _BEARER_ALLOWED))


@dataclass
class StaffSessions:
    staff: Staff
    # Seconds since the epoch; a test moves it to expire sessions.
    clock: Callable[[], float] = field(default=time.time)
    _storage: EncryptedCookieStorage | None = field(default=None, init=False, repr=False)

    def middlewares(self, master_key: bytes, *, secure: bool) -> list[web.Middleware]:
        storage = self._storage = EncryptedCookieStorage(
            cookie_key(master_key),
            cookie_name=COOKIE,
            max_age=ABSOLUTE_S,
            httponly=True,
            secure=secure,
            samesite="Strict",
        )
        return [aiohttp_session.session_middleware(storage), csrf_middleware]

    async def csrf_token(self, request: web.Request) -> str:
        """This session's CSRF token (a session is started for a visitor without one)."""
        session = await aiohttp_session.get_session(request)
        token = session.get(CSRF_FIELD)
        if not isinstance(token, str):
            token = secrets.token_urlsafe(32)
            session[CSRF_FIELD] = token
        return token

    async def start(self, request: web.Request, member: StaffMember) -> None:
        """Log ``member`` in: a fresh session with a new CSRF token."""
        session = await aiohttp_session.get_session(request)
        session.invalidate()
        now = int(self.clock())
        session.update(
            {
                "staff": member.id,
                "gen": member.session_generation,
                "iat": now,
                "seen": now,
                CSRF_FIELD: secrets.token_urlsafe(32),
            }
        )
        request[_REQUEST_MEMBER] = member

    async def current(self, request: web.Request) -> StaffMember | None:
        """The logged-in staff member, or None (and the session is dropped) if the cookie
        is missing, expired, idle too long, of an older generation or a disabled account."""
        if _REQUEST_MEMBER in request:
            return request[_REQUEST_MEMBER]
        session = await aiohttp_session.get_session(request)
        member = await self._check(session)
        if member is None and "staff" in session:
            session.invalidate()
        request[_REQUEST_MEMBER] = member
        return member

    async def peek(self, request: web.Request) -> StaffMember | None:
        """The logged-in staff member, read from the cookie before the session middleware
        has run (the upload middleware, which must decide before reading a large body)."""
        if self._storage is None:
            return None
        return await self._check(await self._storage.load_session(request))

    async def end(self, request: web.Request) -> None:
        """Log out: this cookie and every other copy of it stop working."""
        member = await self.current(request)
        if member is not None:
            await self.staff.end_sessions(member.id)
        session = await aiohttp_session.get_session(request)
        session.invalidate()
        request[_REQUEST_MEMBER] = None

    async def _check(self, session: aiohttp_session.Session) -> StaffMember | None:
        staff_id, gen = session.get("staff"), session.get("gen")
        issued, seen = session.get("iat"), session.get("seen")
        if not isinstance(staff_id, str) or not all(
            isinstance(v, int) for v in (gen, issued, seen)
        ):
            return None
        now = self.clock()
        if now - issued >= ABSOLUTE_S or now - seen >= IDLE_S:  # type: ignore[operator]
            return None
        try:
            member = await self.staff.get(staff_id)
        except NotFound:
            return None
        if member.disabled or member.session_generation != gen:
            return None
        if now - seen >= _SEEN_GRANULARITY_S:  # type: ignore[operator]
            session["seen"] = int(now)
        return member


@web.middleware
async def csrf_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if _protected(request):
        session = await aiohttp_session.get_session(request)
        expected = session.get(CSRF_FIELD)
        given: object = request.headers.get(CSRF_HEADER)
        if given is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            given = (await form(request)).get(CSRF_FIELD)
        if not (
            isinstance(expected, str)
            and isinstance(given, str)
            and hmac.compare_digest(given.encode(), expected.encode())
        ):
            log.info("refused a %s to %s without a valid CSRF token", request.method,
                     request.path)  # fmt: skip
            if _under(request.path, _BEARER_ALLOWED):
                raise web.HTTPForbidden(
                    text='{"error":"csrf","message":"missing or wrong CSRF token"}',
                    content_type="application/json",
                    headers={"Cache-Control": "no-store"},
                )
            raise web.HTTPForbidden(text="missing or wrong CSRF token")
    return await handler(request)
