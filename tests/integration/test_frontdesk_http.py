"""Staff login, sessions, CSRF, the admin console's site boundaries and its change notices,
over real HTTP against the in-process app."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from rooms.records.access import Actor
from rooms.records.login_throttle import USERNAME_POLICY
from rooms.records.passwords import Passwords
from rooms.records.sites import SiteKind
from rooms.records.staff import StaffMember
from rooms.roles import StaffRole
from signaling.console.api_auth import site_token
from signaling.console.frontdesk import FrontDeskService
from signaling.console.sessions import ABSOLUTE_S, COOKIE, IDLE_S
from signaling.http import appkeys
from tests.integration.conftest import Harness

ROOT = Actor.command_line("tests")
PASSWORD = "a long enough password"
GENERIC = "Login failed. Check your username and password, or wait a little and try again."
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _service(harness: Harness) -> FrontDeskService:
    return harness.http.app[appkeys.FRONTDESK]


@pytest.fixture
async def service(harness: Harness) -> FrontDeskService:
    service = _service(harness)
    # Cheap Argon2 for the accounts made here; the login path is the same code.
    service.desk.staff.passwords = Passwords.for_tests()
    return service


@dataclass
class Browser:
    """One cookie jar against the server, like one browser profile."""

    base: str
    http: aiohttp.ClientSession

    async def csrf(self, path: str = "/login") -> str:
        async with self.http.get(self.base + path) as resp:
            found = _CSRF.search(await resp.text())
        assert found, f"no CSRF token on {path}"
        return found.group(1)

    async def login(self, username: str, password: str) -> aiohttp.ClientResponse:
        csrf = await self.csrf()
        resp = await self.http.post(
            self.base + "/login",
            data={"csrf": csrf, "username": username, "password": password},
            allow_redirects=False,
        )
        await resp.read()
        return resp

    async def post(self, path: str, data: dict[str, str], csrf: str | None = "page") -> int:
        if csrf == "page":
            csrf = await self.csrf("/console/admin")
        body = dict(data) if csrf is None else {"csrf": csrf, **data}
        async with self.http.post(self.base + path, data=body, allow_redirects=False) as resp:
            await resp.read()
            return resp.status

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.base + path, allow_redirects=False) as resp:
            return resp.status, await resp.text()


@pytest.fixture
async def browsers(harness: Harness) -> AsyncIterator[list[Browser]]:
    made: list[aiohttp.ClientSession] = []

    def new() -> Browser:
        # unsafe: the server is 127.0.0.1, and by default a jar keeps no cookies for an IP.
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        made.append(session)
        return Browser(harness.base_url, session)

    yield [new(), new(), new()]
    for session in made:
        await session.close()


async def _platform_admin(service: FrontDeskService) -> StaffMember:
    return await service.desk.staff.add(
        ROOT, username="root", display_name="Root", password=PASSWORD, role="admin",
        site_id=None, platform_admin=True,
    )  # fmt: skip


async def _site_with_admin(service: FrontDeskService, name: str, username: str) -> tuple[str, str]:
    site = await service.desk.sites.create(ROOT, SiteKind.township_health_centre, name)
    admin = await service.desk.staff.add(
        ROOT, username=username, display_name=f"Admin of {name}", password=PASSWORD,
        role=StaffRole.admin, site_id=site.id,
    )  # fmt: skip
    return site.id, admin.id


def _login_entries(harness: Harness) -> list[dict[str, object]]:
    return [e for e in harness.server.audit.entries() if e["action"] == "staff_login"]


# ------------------------------------------------------------------ login and logout


async def test_login_sets_a_strict_cookie_and_logout_kills_every_copy(
    harness: Harness, service: FrontDeskService, browsers: list[Browser]
) -> None:
    await _platform_admin(service)
    alice, thief, _ = browsers
    resp = await alice.login("root", PASSWORD)
    assert resp.status == 303 and resp.headers["Location"] == "/console"
    set_cookie = resp.headers.getall("Set-Cookie")[-1]
    assert set_cookie.startswith(COOKIE + "=")
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    assert "Secure" not in set_cookie  # plain HTTP here; under TLS it is Secure
    status, body = await alice.get("/console/admin")
    assert status == 200 and 'id="add-site"' in body
    stolen = alice.http.cookie_jar.filter_cookies(harness.base_url)[COOKIE].value
    thief.http.cookie_jar.update_cookies({COOKIE: stolen})
    assert (await thief.get("/console/admin"))[0] == 200  # the copy works... until logout
    assert await alice.post("/logout", {}) == 303
    assert (await alice.get("/console/admin"))[0] == 303
    status, _ = await thief.get("/console/admin")
    assert status == 303, "a copy of the cookie outlived the logout"
    actions = [e["action"] for e in harness.server.audit.entries()]
    assert "staff_logout" in actions


async def test_every_failed_login_gets_one_generic_answer_and_is_audited(
    harness: Harness, service: FrontDeskService, browsers: list[Browser]
) -> None:
    site, _ = await _site_with_admin(service, "Hetian THC", "thc-admin")
    disabled = await service.desk.staff.add(
        ROOT, username="gone", display_name="Gone", password=PASSWORD, role="doctor",
        site_id=site,
    )  # fmt: skip
    await service.desk.staff.disable(ROOT, disabled.id)
    await service.desk.staff.add(
        ROOT, username="locked", display_name="L", password=PASSWORD, role="doctor", site_id=site
    )
    from datetime import UTC, datetime

    for _ in range(USERNAME_POLICY.lock_after):
        await service.desk.throttle.failed("locked", None, datetime.now(UTC))
    browser = browsers[0]
    answers = []
    for username, password in (
        ("thc-admin", "wrong password here"),
        ("nobody-at-all", PASSWORD),
        ("gone", PASSWORD),
        ("locked", PASSWORD),
    ):
        resp = await browser.login(username, password)
        body = await resp.text()
        assert resp.status == 401 and GENERIC in body
        answers.append(_CSRF.sub("", body))
    assert len(set(answers)) == 1, "the answers differ between kinds of failure"
    entries = _login_entries(harness)
    assert [e["outcome"] for e in entries] == ["bad_credentials", "bad_credentials",
                                               "disabled", "locked"]  # fmt: skip
    assert entries[1]["staff"] is None and entries[2]["staff"] == disabled.id
    assert all(e["addr"] == "127.0.0.1" for e in entries)
    log_text = harness.server.audit.path.read_text()
    for secret in (PASSWORD, "wrong password here", "nobody-at-all", "Gone"):
        assert secret not in log_text
    assert (await browser.login("thc-admin", PASSWORD)).status == 303
    assert _login_entries(harness)[-1]["outcome"] == "ok"


async def test_garbage_login_forms_are_refused_and_the_server_lives(
    harness: Harness, service: FrontDeskService, browsers: list[Browser]
) -> None:
    browser = browsers[0]
    csrf = await browser.csrf()
    for data in ({"csrf": csrf}, {"csrf": csrf, "username": "x" * 100_000, "password": "y"}):
        async with browser.http.post(harness.base_url + "/login", data=data) as resp:
            assert resp.status in (400, 401, 413)
    async with browser.http.get(harness.base_url + "/healthz") as resp:
        assert resp.status == 200


# ------------------------------------------------------------------ CSRF


async def test_a_missing_or_wrong_csrf_token_is_403(
    service: FrontDeskService, browsers: list[Browser]
) -> None:
    await _platform_admin(service)
    browser = browsers[0]
    async with browser.http.post(
        browser.base + "/login", data={"username": "root", "password": PASSWORD},
        allow_redirects=False,
    ) as resp:  # fmt: skip
        assert resp.status == 403  # login CSRF too
    assert (await browser.login("root", PASSWORD)).status == 303
    site = {"kind": "village_clinic", "name": "Xiaocun"}
    assert await browser.post("/console/admin/sites", site, csrf=None) == 403
    assert await browser.post("/console/admin/sites", site, csrf="not-the-token") == 403
    assert await browser.post("/logout", {}, csrf=None) == 403
    assert await service.desk.sites.list() == []
    token = await browser.csrf("/console/admin")
    async with browser.http.post(
        browser.base + "/console/admin/sites", data=site,
        headers={"X-CSRF-Token": token}, allow_redirects=False,
    ) as resp:  # fmt: skip
        assert resp.status == 303
    assert [s.name for s in await service.desk.sites.list()] == ["Xiaocun"]


# ------------------------------------------------------------------ sessions


async def test_sessions_end_when_idle_or_old(
    service: FrontDeskService, browsers: list[Browser]
) -> None:
    await _platform_admin(service)
    idle, busy, _ = browsers
    start = time.time()
    for b in (idle, busy):
        assert (await b.login("root", PASSWORD)).status == 303
    service.sessions.clock = lambda: start + IDLE_S - 60
    assert (await idle.get("/console/admin"))[0] == 200
    service.sessions.clock = lambda: start + IDLE_S - 60 + IDLE_S
    assert (await idle.get("/console/admin"))[0] == 303  # 30 min without a request
    # Busy all day: every request within the idle limit, and still out after 12 h.
    at = start
    while at + IDLE_S / 2 < start + ABSOLUTE_S:
        at += IDLE_S / 2
        service.sessions.clock = lambda at=at: at  # type: ignore[misc]
        assert (await busy.get("/console/admin"))[0] == 200
    service.sessions.clock = lambda: start + ABSOLUTE_S
    assert (await busy.get("/console/admin"))[0] == 303


async def test_disabling_or_a_new_password_ends_sessions_at_once(
    service: FrontDeskService, browsers: list[Browser]
) -> None:
    site, admin_id = await _site_with_admin(service, "Hetian THC", "thc-admin")
    doctor = await service.desk.staff.add(
        ROOT, username="dr-li", display_name="Li", password=PASSWORD, role="doctor", site_id=site
    )
    admin, doc, _ = browsers
    assert (await admin.login("thc-admin", PASSWORD)).status == 303
    assert (await doc.login("dr-li", PASSWORD)).status == 303
    assert (await doc.get("/console"))[0] == 200
    assert await admin.post(f"/console/admin/staff/{doctor.id}/password",
                            {"password": "a new password 2", "site": site}) == 303  # fmt: skip
    assert (await doc.get("/console"))[0] == 303
    assert (await doc.login("dr-li", "a new password 2")).status == 303
    assert await admin.post(f"/console/admin/staff/{doctor.id}/disable", {"site": site}) == 303
    assert (await doc.get("/console"))[0] == 303
    # Your own password: this session goes on, others of the account end.
    other = browsers[2]
    assert (await other.login("thc-admin", PASSWORD)).status == 303
    csrf = await admin.csrf("/console/admin")
    assert await admin.post(
        "/console/password",
        {"current_password": PASSWORD, "new_password": "my own new password"}, csrf=csrf,
    ) == 303  # fmt: skip
    assert (await admin.get("/console/admin"))[0] == 200
    assert (await other.get("/console/admin"))[0] == 303
    assert admin_id


# ------------------------------------------------------------------ site boundaries


async def test_a_site_admin_cannot_see_or_touch_another_site(
    service: FrontDeskService, browsers: list[Browser]
) -> None:
    await _site_with_admin(service, "Site A", "admin-a")
    site_b, admin_b = await _site_with_admin(service, "Site B", "admin-b")
    await service.desk.staff.add(
        ROOT, username="b-doctor", display_name="Secret Doctor B", password=PASSWORD,
        role="doctor", site_id=site_b,
    )  # fmt: skip
    a = browsers[0]
    assert (await a.login("admin-a", PASSWORD)).status == 303
    status, body = await a.get("/console/admin")
    assert status == 200 and "Site A" in body
    assert "b-doctor" not in body and "Secret Doctor B" not in body and site_b not in body
    assert (await a.get(f"/console/admin?site={site_b}"))[0] == 404
    form = {"username": "mole", "display_name": "Mole", "role": "admin",
            "password": PASSWORD, "site": site_b}  # fmt: skip
    assert await a.post(f"/console/admin/sites/{site_b}/staff", form) == 403
    assert await service.desk.staff.by_username("mole") is None
    assert await a.post(f"/console/admin/staff/{admin_b}/disable", {}) == 404
    assert not (await service.desk.staff.get(admin_b)).disabled
    assert await a.post(f"/console/admin/sites/{site_b}/departments", {"name": "X"}) == 403
    assert await a.post("/console/admin/sites", {"kind": "village_clinic", "name": "X"}) == 403
    # A doctor has no admin console at all.
    doctor = browsers[1]
    assert (await doctor.login("b-doctor", PASSWORD)).status == 303
    assert (await doctor.get("/console/admin"))[0] == 403
    status, body = await doctor.get("/console")
    assert status == 200 and "Secret Doctor B" in body  # their own name, on their own page


async def _read_events(resp: aiohttp.ClientResponse, seen: list[str]) -> None:
    async for line in resp.content:
        seen.append(line.decode().strip())


async def test_change_notices_reach_the_sites_admins_only_within_a_second(
    service: FrontDeskService, browsers: list[Browser]
) -> None:
    site_a, _ = await _site_with_admin(service, "Site A", "admin-a")
    await _site_with_admin(service, "Site B", "admin-b")
    a1, a2, b = browsers
    for browser, username in ((a1, "admin-a"), (a2, "admin-a"), (b, "admin-b")):
        assert (await browser.login(username, PASSWORD)).status == 303
    seen_a: list[str] = []
    seen_b: list[str] = []
    async with (
        a2.http.get(a2.base + "/console/events") as stream_a,
        b.http.get(b.base + "/console/events") as stream_b,
    ):
        assert stream_a.headers["Content-Type"] == "text/event-stream"
        readers = [
            asyncio.create_task(_read_events(stream_a, seen_a)),
            asyncio.create_task(_read_events(stream_b, seen_b)),
        ]
        try:
            while service.events.subscribers < 2:  # type: ignore[attr-defined]
                await asyncio.sleep(0.01)
            form = {"username": "nurse-a", "display_name": "N", "role": "nurse",
                    "password": PASSWORD, "site": site_a}  # fmt: skip
            assert await a1.post(f"/console/admin/sites/{site_a}/staff", form) == 303
            deadline = time.monotonic() + 1.0
            while "event: changed" not in seen_a and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert "event: changed" in seen_a, seen_a
            assert any(site_a in line for line in seen_a if line.startswith("data:"))
            await asyncio.sleep(0.2)
            assert "event: changed" not in seen_b, "site B's console heard of site A's staff"
        finally:
            for reader in readers:
                reader.cancel()
    # Logged out: no stream.
    anonymous = aiohttp.ClientSession()
    try:
        async with anonymous.get(a1.base + "/console/events") as resp:
            assert resp.status == 401
    finally:
        await anonymous.close()


# ------------------------------------------------------------------ API tokens


async def test_an_api_token_works_for_its_own_site_only(harness: Harness) -> None:
    service = _service(harness)
    site_a = await service.desk.sites.create(ROOT, SiteKind.village_clinic, "A")
    site_b = await service.desk.sites.create(ROOT, SiteKind.village_clinic, "B")
    issued = await service.desk.api_tokens.issue(ROOT, site_a.id, "HIS")

    async def probe(request: web.Request) -> web.Response:
        token = await site_token(request, request.match_info["site"])
        return web.json_response({"token": token.id})

    app = web.Application()
    app[appkeys.FRONTDESK] = service
    app.router.add_get("/probe/{site}", probe)
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        auth = {"Authorization": f"Bearer {issued.secret}"}
        assert (await client.get(f"/probe/{site_a.id}", headers=auth)).status == 200
        assert (await client.get(f"/probe/{site_b.id}", headers=auth)).status == 403
        assert (await client.get(f"/probe/{site_a.id}")).status == 401
        bad = {"Authorization": "Bearer tcs_" + "A" * 43}
        assert (await client.get(f"/probe/{site_a.id}", headers=bad)).status == 401
        await service.desk.api_tokens.revoke(ROOT, issued.token.id)
        assert (await client.get(f"/probe/{site_a.id}", headers=auth)).status == 401


async def test_console_pages_escape_names_and_send_the_strict_headers(
    service: FrontDeskService, browsers: list[Browser]
) -> None:
    await _platform_admin(service)
    evil = '<script>window.__pwned=1</script><img src=x onerror="x()">'
    site = await service.desk.sites.create(ROOT, SiteKind.expert_hospital, evil)
    await service.desk.sites.add_department(ROOT, site.id, evil)
    other = await service.desk.sites.create(ROOT, SiteKind.nursing_home, evil[:100])
    dept = (await service.desk.sites.departments(site.id))[0]
    await service.desk.sites.partner(ROOT, other.id, dept.id)
    browser = browsers[0]
    assert (await browser.login("root", PASSWORD)).status == 303
    async with browser.http.get(f"{browser.base}/console/admin?site={site.id}") as resp:
        body = await resp.text()
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>window.__pwned" not in body and "<img src=x" not in body
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in body
