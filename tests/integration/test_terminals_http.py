"""Nursing-home terminals over real HTTP against the in-process app: pairing with a code
entered in the admin console (wrong, expired, too many), the device credential cookie, the
event stream, a doctor's call ringing the terminal, declining, and revocation ending the
stream and the terminal's live call (a real aiortc bot joined with the terminal's token)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from media.clips import Clip
from rooms.records.access import Actor
from rooms.records.passwords import Passwords
from rooms.records.sites import SiteKind
from rooms.records.terminals import MAX_FAILURES
from rooms.roles import Role, StaffRole
from signaling import tokens
from signaling.bot import Bot
from signaling.console.clinic import CLINIC
from signaling.console.frontdesk import FrontDeskService
from signaling.http import appkeys
from signaling.terminal.api import COOKIE
from tests.integration.conftest import Harness

ROOT = Actor.command_line("tests")
PASSWORD = "a long enough password"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Client:
    """One cookie jar: a staff member's browser, or the terminal's."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def login(self, username: str) -> None:
        csrf = await self.csrf("/login")
        async with self.http.post(
            self.base + "/login",
            data={"csrf": csrf, "username": username, "password": PASSWORD},
            allow_redirects=False,
        ) as r:
            assert r.status == 303

    async def csrf(self, path: str) -> str:
        async with self.http.get(self.base + path) as r:
            found = _CSRF.search(await r.text())
        assert found
        return found.group(1)

    async def form(self, path: str, data: dict[str, str], page: str) -> tuple[int, str, str]:
        body = {"csrf": await self.csrf(page), **data}
        async with self.http.post(self.base + path, data=body, allow_redirects=False) as r:
            return r.status, r.headers.get("Location", ""), await r.text()

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, json=body) as r:
            return r.status, await r.json()


@pytest.fixture
async def clients(harness: Harness) -> AsyncIterator[list[Client]]:
    made = [Client(harness.base_url) for _ in range(3)]
    yield made
    for c in made:
        await c.http.close()


async def _home(service: FrontDeskService) -> str:
    service.desk.staff.passwords = Passwords.for_tests()
    home = await service.desk.sites.create(ROOT, SiteKind.nursing_home, "Sunshine Home")
    for username, role in (("home-admin", StaffRole.admin), ("dr-li", StaffRole.doctor)):
        await service.desk.staff.add(
            ROOT, username=username, display_name="Dr. Li" if role is StaffRole.doctor
            else "Admin Wu", password=PASSWORD, role=role, site_id=home.id,
        )  # fmt: skip
    return home.id


class Stream:
    """The terminal's event stream, read in the background."""

    def __init__(self, client: Client) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.ended = asyncio.Event()
        self.status = 0
        self._task = asyncio.get_running_loop().create_task(self._read(client))

    async def _read(self, client: Client) -> None:
        try:
            async with client.http.get(client.base + "/api/terminal/events") as r:
                self.status = r.status
                name = "message"
                async for raw in r.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        self.events.append((name, json.loads(line[6:])))
        finally:
            self.ended.set()

    async def wait(self, name: str, timeout: float = 5) -> dict[str, Any]:
        async def found() -> dict[str, Any]:
            while True:
                for n, data in self.events:
                    if n == name:
                        return data
                await asyncio.sleep(0.05)

        return await asyncio.wait_for(found(), timeout)

    async def close(self) -> None:
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


async def _pair(terminal: Client, admin: Client, home: str) -> str:
    status, pairing = await terminal.api("POST", "/api/terminal/pairings", {})
    assert status == 201
    status, got = await terminal.api(
        "POST", "/api/terminal/pairings/collect", {"ticket": pairing["ticket"]}
    )
    assert (status, got["state"]) == (200, "waiting")
    status, location, _ = await admin.form(
        f"/console/admin/sites/{home}/terminals",
        {"site": home, "code": pairing["code"], "label": "Room 203", "auto_answer": "5"},
        "/console/admin",
    )
    assert status == 303 and "done=terminal_paired" in location
    async with terminal.http.post(
        terminal.base + "/api/terminal/pairings/collect", json={"ticket": pairing["ticket"]}
    ) as r:
        got = await r.json()
        cookie = r.headers["Set-Cookie"]
    assert got["state"] == "paired"
    assert got["terminal"]["site"] == "Sunshine Home"
    assert got["terminal"]["label"] == "Room 203" and got["terminal"]["auto_answer"] == 5
    assert cookie.startswith(f"{COOKIE}=tct_")
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/api/terminal", "Max-Age="):
        assert attribute in cookie
    return str(got["terminal"]["id"])


async def test_pairing_refuses_wrong_codes_then_pairs_and_the_terminal_is_called(
    harness: Harness, clients: list[Client]
) -> None:
    service = harness.http.app[appkeys.FRONTDESK]
    home = await _home(service)
    terminal, admin, doctor = clients
    assert await terminal.api("GET", "/api/terminal/me") == (
        401, {"error": "unpaired", "message": "this terminal is not paired"},
    )  # fmt: skip
    page = await terminal.http.get(harness.base_url + "/terminal")
    assert page.status == 200 and 'lang="zh-CN"' in await page.text()
    await admin.login("home-admin")

    # A wrong code: a clear, translated refusal; no terminal appears.
    status, _, text = await admin.form(
        f"/console/admin/sites/{home}/terminals",
        {"site": home, "code": "000000", "label": "Room 203"}, "/console/admin",
    )  # fmt: skip
    assert status == 400 and "No terminal shows this code" in text
    terminal_id = await _pair(terminal, admin, home)
    status, me = await terminal.api("GET", "/api/terminal/me")
    assert status == 200 and me["id"] == terminal_id

    stream = Stream(terminal)
    hello = await stream.wait("hello")
    assert hello["label"] == "Room 203"
    async with admin.http.get(f"{harness.base_url}/console/admin?site={home}") as r:
        console = await r.text()
    assert f'data-terminal="{terminal_id}" data-state="online"' in console

    # The home's doctor calls: the terminal rings with the caller's name and role, and a
    # token of its own (patient, pre-admitted, its identity, its label as name).
    await doctor.login("dr-li")
    status, location, _ = await doctor.form(
        f"/console/terminals/{terminal_id}/call", {}, "/console"
    )
    assert status == 303 and location.startswith("/join/")
    ring = await stream.wait("ring")
    assert ring["caller"] == {"name": "Dr. Li", "role": "doctor"} and ring["autoAnswer"] == 5
    grant = tokens.verify(harness.config.secret, ring["join"].removeprefix("/join/"))
    assert (grant.role, grant.waits, grant.identity, grant.name) == (
        Role.patient, False, f"terminal-{terminal_id}", "Room 203",
    )  # fmt: skip
    doctor_grant = tokens.verify(harness.config.secret, location.removeprefix("/join/"))
    assert doctor_grant.consultation_id == grant.consultation_id
    async with doctor.http.get(harness.base_url + "/console") as r:
        assert "Last called: never" not in await r.text()

    # Declining withdraws the terminal's link to that call.
    status, _ = await terminal.api("POST", f"/api/terminal/calls/{ring['call']}/decline", {})
    assert status == 200
    bot = Bot(harness.base_url, ring["join"].removeprefix("/join/"))
    try:
        with pytest.raises(ConnectionError):
            await bot.connect(timeout=5)
        assert bot.errors[-1].code == "revoked_token"
    finally:
        await bot.close(leave=False)
    # Cookie-authenticated writes take JSON from this origin only.
    async with terminal.http.post(
        harness.base_url + f"/api/terminal/calls/{ring['call']}/answer", data={"auto": "1"}
    ) as r:
        assert r.status == 415
    # The terminal goes (its stream closes): the consoles show it offline within seconds.
    await stream.close()
    for _ in range(50):
        async with admin.http.get(f"{harness.base_url}/console/admin?site={home}") as r:
            if f'data-terminal="{terminal_id}" data-state="offline"' in await r.text():
                break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the console did not show the terminal offline")

    actions = [e["action"] for e in harness.server.audit.entries()]
    for action in ("terminal_pairing_refused", "terminal_paired", "terminal_credential_issued",
                   "terminal_called", "terminal_declined"):  # fmt: skip
        assert action in actions
    assert "Room 203" not in harness.server.audit.path.read_text()


async def test_revoking_a_terminal_disconnects_it_and_ends_its_call(
    harness: Harness, clients: list[Client], video_clip: Clip
) -> None:
    service = harness.http.app[appkeys.FRONTDESK]
    home = await _home(service)
    terminal, admin, doctor = clients
    await admin.login("home-admin")
    await doctor.login("dr-li")
    terminal_id = await _pair(terminal, admin, home)
    stream = Stream(terminal)
    await stream.wait("hello")
    _, location, _ = await doctor.form(f"/console/terminals/{terminal_id}/call", {}, "/console")
    ring = await stream.wait("ring")
    status, _ = await terminal.api(
        "POST", f"/api/terminal/calls/{ring['call']}/answer", {"auto": True}
    )
    assert status == 200

    caller = harness.bot(location.removeprefix("/join/"), video=video_clip)
    resident = harness.bot(ring["join"].removeprefix("/join/"), video=video_clip)
    await caller.connect()
    await resident.connect()
    assert await caller.wait_for(
        lambda: caller.frames_from(resident.participant_id, "video") > 5, 10
    )

    status, location, _ = await admin.form(
        f"/console/admin/terminals/{terminal_id}/revoke", {"site": home}, "/console/admin"
    )
    assert status == 303 and "done=terminal_revoked" in location
    # At once: the stream says so and ends, the live call ends, the credential is dead.
    assert (await stream.wait("revoked", 2)) == {"type": "revoked"}
    await asyncio.wait_for(stream.ended.wait(), 2)
    assert await resident.wait_for(lambda: resident.bye is not None, 3)
    assert resident.bye is not None and resident.bye.reason == "removed"
    status, body = await terminal.api("GET", "/api/terminal/me")
    assert (status, body["error"]) == (401, "revoked")
    async with terminal.http.get(harness.base_url + "/api/terminal/events") as r:
        assert r.status == 401
    audited = [e for e in harness.server.audit.entries() if e["action"] == "terminal_revoked"]
    assert audited and audited[0]["terminal"] == terminal_id and audited[0]["calls"] == 1


async def test_too_many_wrong_codes_are_refused_for_a_while(
    harness: Harness, clients: list[Client]
) -> None:
    service = harness.http.app[appkeys.FRONTDESK]
    home = await _home(service)
    terminal, admin, _ = clients
    await admin.login("home-admin")
    _, pairing = await terminal.api("POST", "/api/terminal/pairings", {})
    wrong = f"{(int(pairing['code']) + 1) % 1_000_000:06d}"
    for _ in range(MAX_FAILURES):
        status, _, _ = await admin.form(
            f"/console/admin/sites/{home}/terminals",
            {"site": home, "code": wrong, "label": "Room 1"}, "/console/admin",
        )  # fmt: skip
        assert status == 400
    status, _, text = await admin.form(
        f"/console/admin/sites/{home}/terminals",
        {"site": home, "code": pairing["code"], "label": "Room 1"}, "/console/admin",
    )  # fmt: skip
    assert status == 429 and "Too many wrong codes" in text


async def test_a_nurse_calls_into_the_homes_consultation_and_outsiders_cannot_call(
    harness: Harness, clients: list[Client]
) -> None:
    service = harness.http.app[appkeys.FRONTDESK]
    home = await _home(service)
    clinic = await service.desk.sites.create(ROOT, SiteKind.village_clinic, "Village clinic")
    for username, role, site in (("nurse-wu", StaffRole.nurse, home),
                                 ("dr-out", StaffRole.doctor, clinic.id)):  # fmt: skip
        await service.desk.staff.add(
            ROOT, username=username, display_name=username, password=PASSWORD, role=role,
            site_id=site,
        )  # fmt: skip
    terminal, admin, nurse = clients
    await admin.login("home-admin")
    terminal_id = await _pair(terminal, admin, home)
    stream = Stream(terminal)
    await stream.wait("hello")
    (doctor,) = [m for m in await service.desk.staff.list(ROOT, home) if m.username == "dr-li"]
    c = await harness.http.app[CLINIC].start_now(doctor.actor, "one_to_one", 30, None)

    await nurse.login("nurse-wu")
    # A nurse starts nothing: the call goes into a consultation the home runs.
    status, _, text = await nurse.form(f"/console/terminals/{terminal_id}/call", {}, "/console")
    assert status == 400 and "A nurse calls a terminal from a consultation" in text
    page = f"/console/consultations/{c.id}"
    async with nurse.http.get(harness.base_url + page) as r:
        assert f'data-terminal="{terminal_id}"' in await r.text()
    status, location, _ = await nurse.form(
        f"/console/terminals/{terminal_id}/call", {"consultation": c.id}, page
    )
    assert status == 303 and location.startswith("/join/")
    ring = await stream.wait("ring")
    assert ring["caller"] == {"name": "nurse-wu", "role": "nurse"}
    grant = tokens.verify(harness.config.secret, ring["join"].removeprefix("/join/"))
    assert grant.consultation_id == c.id

    # Another site's doctor: the terminal does not exist for them.
    outsider = Client(harness.base_url)
    try:
        await outsider.login("dr-out")
        status, _, _ = await outsider.form(f"/console/terminals/{terminal_id}/call", {}, "/console")
        assert status == 404
    finally:
        await outsider.http.close()
    await stream.close()
