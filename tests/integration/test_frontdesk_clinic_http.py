"""The clinical front desk over real HTTP against the in-process app: a request with an
attachment, the expert's queue and decision, links with their QR code, printable page and
calendar file, signed opinions; site boundaries (404/403), CSRF on forms and the JSON API,
uploads refused with a clear error, live change notices, rescheduling that revokes links,
and an audit log that names no patient."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import cv2
import numpy as np
import pytest

from recordings.store import RecordingStore
from rooms.records.access import Actor
from rooms.records.passwords import Passwords
from rooms.records.sites import SiteKind
from rooms.records.staff import StaffMember
from rooms.roles import StaffRole
from signaling import tokens
from signaling.console.clinic import CLINIC, ClinicService
from signaling.console.forms import MAX_UPLOAD_BODY
from signaling.events import BaseEvent, OpinionFiled
from tests.clinic_images import DEVICE, GPS_MARK, decode_qr, jpeg_with_gps, pdf
from tests.integration.conftest import Harness

ROOT = Actor.command_line("tests")
PASSWORD = "a long enough password"
PATIENT = "Zhao Xiaoming 赵小明"
REASON = "Chest pain since this morning; ECG shows ST elevation"
RELATIVE = "Zhao Daming 赵大明"
FINDINGS = "ST elevation V2-V4, reciprocal changes"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Browser:
    base: str
    http: aiohttp.ClientSession

    async def login(self, username: str) -> None:
        _, body = await self.get("/login")
        csrf = _CSRF.search(body)
        assert csrf
        async with self.http.post(
            self.base + "/login",
            data={"csrf": csrf.group(1), "username": username, "password": PASSWORD},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303, await resp.text()

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.base + path, allow_redirects=False) as resp:
            return resp.status, await resp.text()

    async def csrf(self) -> str:
        async with self.http.get(self.base + "/console") as resp:
            body = await resp.text()
        found = _CSRF.search(body)
        assert found, body[:500]
        return found.group(1)

    async def post(
        self, path: str, data: dict[str, str] | aiohttp.FormData, *, csrf: bool = True
    ) -> tuple[int, str, str]:
        """(status, Location, body)"""
        if csrf:
            token = await self.csrf()
            if isinstance(data, aiohttp.FormData):
                data.add_field("csrf", token)
            else:
                data = {"csrf": token, **data}
        async with self.http.post(self.base + path, data=data, allow_redirects=False) as resp:
            return resp.status, resp.headers.get("Location", ""), await resp.text()

    async def api(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        csrf: bool = True,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, object]]:
        sent = dict(headers or {})
        if csrf and method != "GET":
            sent["X-CSRF-Token"] = await self.csrf()
        async with self.http.request(
            method, self.base + "/api/frontdesk" + path, json=body, headers=sent
        ) as resp:
            assert resp.headers["Cache-Control"] == "no-store"
            return resp.status, await resp.json()


@dataclass
class World:
    service: ClinicService
    thc: str
    hosp: str
    village: str
    cardio: str
    doctor: StaffMember
    nurse: StaffMember
    expert: StaffMember
    expert2: StaffMember
    village_doctor: StaffMember
    thc_admin: StaffMember


@pytest.fixture
async def world(harness: Harness) -> World:
    service = harness.http.app[CLINIC]
    desk = service.frontdesk.desk
    desk.staff.passwords = Passwords.for_tests()
    thc = await desk.sites.create(ROOT, SiteKind.township_health_centre, "Hetian THC")
    hosp = await desk.sites.create(ROOT, SiteKind.expert_hospital, "Provincial Hospital")
    village = await desk.sites.create(ROOT, SiteKind.village_clinic, "Xiaocun clinic")
    cardio = await desk.sites.add_department(ROOT, hosp.id, "Cardiology")
    await desk.sites.partner(ROOT, thc.id, cardio.id)

    async def member(username: str, role: StaffRole, site: str, name: str) -> StaffMember:
        return await desk.staff.add(
            ROOT,
            username=username,
            display_name=name,
            password=PASSWORD,
            role=role,
            site_id=site,
        )

    return World(
        service,
        thc.id,
        hosp.id,
        village.id,
        cardio.id,
        doctor=await member("dr-wang", StaffRole.doctor, thc.id, "Dr. Wang"),
        nurse=await member("nurse-li", StaffRole.nurse, thc.id, "Nurse Li"),
        expert=await member("dr-zhang", StaffRole.expert, hosp.id, "Dr. Zhang"),
        expert2=await member("dr-chen", StaffRole.expert, hosp.id, "Dr. Chen"),
        village_doctor=await member("dr-village", StaffRole.doctor, village.id, "Dr. Village"),
        thc_admin=await member("thc-admin", StaffRole.admin, thc.id, "Admin Wu"),
    )


@pytest.fixture
async def browsers(harness: Harness) -> AsyncIterator[list[Browser]]:
    sessions = [aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) for _ in range(4)]
    yield [Browser(harness.base_url, s) for s in sessions]
    for s in sessions:
        await s.close()


def _local(at: datetime) -> str:
    """A datetime-local value in UTC (the forms' tz field empty: no script)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def _request_form(w: World, *files: tuple[str, bytes, str]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("department", w.cardio)
    form.add_field("urgency", "urgent")
    form.add_field("patient", PATIENT)
    form.add_field("reason", REASON)
    form.add_field("preferred", _local(datetime.now(UTC) + timedelta(days=1)))
    form.add_field("tz", "")
    for name, data, content_type in files:
        form.add_field("attachments", data, filename=name, content_type=content_type)
    return form


async def _requested(w: World, doctor: Browser, *files: tuple[str, bytes, str]) -> str:
    status, location, body = await doctor.post("/console/requests", _request_form(w, *files))
    assert status == 303, body[:2000]
    found = re.match(r"/console/consultations/([A-Za-z0-9_-]+)\?done=requested", location)
    assert found, location
    return found.group(1)


def _audit_text(harness: Harness) -> str:
    harness.server.audit.flush()
    return harness.server.audit.path.read_text(encoding="utf-8")


def _actions(harness: Harness) -> list[str]:
    return [e["action"] for e in harness.server.audit.entries()]


# ------------------------------------------------------------------ the whole flow


async def test_request_accept_invite_opinion_over_http(
    harness: Harness, world: World, browsers: list[Browser], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    w = world
    doctor, expert, _, _ = browsers
    published: list[BaseEvent] = []
    harness.server.events.subscribe(published.append)
    await doctor.login("dr-wang")
    await expert.login("dr-zhang")
    status, body = await doctor.get("/console")
    assert status == 200 and 'id="request-form"' in body and "Cardiology" in body

    cid = await _requested(
        w,
        doctor,
        ("ecg photo.jpg", jpeg_with_gps(), "image/jpeg"),
        ("report.pdf", pdf(), "application/pdf"),
    )
    status, body = await doctor.get(f"/console/consultations/{cid}")
    assert status == 200 and PATIENT in body and REASON in body
    assert body.count("data-attachment=") == 2

    # The expert's queue shows it; the image comes back without its EXIF.
    status, body = await expert.get("/console")
    assert status == 200 and PATIENT in body and 'data-request="' in body
    request_id = re.search(r'data-request="(req_[0-9a-f]+)"', body).group(1)  # type: ignore[union-attr]
    attachment_ids = re.findall(
        r'data-attachment="(att_[0-9a-f]+)" data-type="image/jpeg"',
        (await expert.get(f"/console/consultations/{cid}"))[1],
    )
    async with expert.http.get(f"{expert.base}/console/attachments/{attachment_ids[0]}") as resp:
        image = await resp.read()
        assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg"
        assert "sandbox" in resp.headers["Content-Security-Policy"]
        assert "ecg%20photo.jpg" in resp.headers["Content-Disposition"]
    assert b"Exif" not in image and GPS_MARK not in image and DEVICE not in image
    assert cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (32, 64)

    start = (datetime.now(UTC) + timedelta(days=1)).replace(second=0, microsecond=0)
    status, location, body = await expert.post(
        f"/console/requests/{request_id}/accept",
        {"start": _local(start), "minutes": "40", "tz": "", "back": "queue"},
    )
    assert status == 303 and location.startswith("/console?department="), body[:2000]
    status, body = await doctor.get(f"/console/consultations/{cid}")
    assert 'data-state="scheduled"' in body and 'id="ics-link"' in body

    # The patient's link: printable page, QR code (decodes to the link), calendar file.
    status, location, _ = await doctor.post(
        f"/console/consultations/{cid}/invitations", {"name": RELATIVE, "role": "patient"}
    )
    assert status == 303 and location.endswith("/print"), location
    status, page = await doctor.get(location)
    assert status == 200 and RELATIVE in page
    url = re.search(r'<code id="join-link">([^<]+)</code>', page).group(1)  # type: ignore[union-attr]
    async with doctor.http.get(doctor.base + location.replace("/print", "/qr.png")) as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
        png = await resp.read()
    decoded = decode_qr(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE))
    assert decoded == url and url.startswith(harness.base_url + "/join/")
    grant = tokens.verify(harness.config.secret, url.rsplit("/", 1)[1], check_times=False)
    assert grant.name == RELATIVE and grant.role == "patient" and grant.consultation_id == cid
    assert grant.not_before == int((start - timedelta(minutes=15)).timestamp())
    assert grant.expires_at == int((start + timedelta(minutes=40 + 30)).timestamp())
    async with doctor.http.get(f"{doctor.base}/console/consultations/{cid}/appointment.ics") as r:
        ics = await r.text()
        assert r.status == 200 and r.content_type == "text/calendar"
    assert "SUMMARY:Expert consultation · Cardiology" in ics and PATIENT not in ics
    assert f"DTSTART:{start.strftime('%Y%m%dT%H%M%SZ')}" in ics

    # The link opened now is early: the page says when to come back.
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(url) as resp:
            early = await resp.text()
    assert 'data-reason="early"' in early and 'id="come-back"' in early

    # The expert signs an opinion; the doctor sees it verified and acknowledges it.
    status, location, body = await expert.post(
        f"/console/consultations/{cid}/opinions",
        {
            "findings": FINDINGS,
            "impression": "Anterior STEMI",
            "recommendations": "PCI now",
            "follow_up": "",
            "supersedes": "",
        },
    )
    assert status == 303, body[:2000]
    status, body = await doctor.get(f"/console/consultations/{cid}")
    assert FINDINGS in body and 'data-check="ok"' in body
    opinion_id = re.search(r'data-acknowledge="(opn_[0-9a-f]+)"', body).group(1)  # type: ignore[union-attr]
    status, page = await doctor.get(f"/console/opinions/{opinion_id}")
    assert status == 200 and 'id="signature-ok"' in page and FINDINGS in page
    status, location, _ = await doctor.post(f"/console/opinions/{opinion_id}/acknowledge", {})
    assert status == 303
    status, body = await doctor.get(f"/console/consultations/{cid}")
    assert 'class="status on acknowledged"' in body
    # Published for systems outside (webhooks): ids only, never the opinion's text.
    (filed,) = published
    assert isinstance(filed, OpinionFiled)
    assert (filed.consultation, filed.opinion, filed.version) == (cid, opinion_id, 1)
    assert filed.author == w.expert.id and FINDINGS not in filed.model_dump_json()

    actions = _actions(harness)
    for action in (
        "consultation_requested",
        "attachment_added",
        "attachment_downloaded",
        "request_accepted",
        "staff_link_issued",
        "invitation_created",
        "invitation_shown",
        "calendar_downloaded",
        "opinion_filed",
        "opinion_acknowledged",
    ):
        assert action in actions, action
    log = _audit_text(harness)
    for secret in (
        PATIENT,
        "Zhao",
        "赵",
        REASON,
        RELATIVE,
        FINDINGS,
        "STEMI",
        "ecg photo",
        "report.pdf",
        "Dr. Wang",
        "Dr. Zhang",
        url.rsplit("/", 1)[1],
    ):
        assert secret not in log, secret
    # The server's own log records too (the in-process app's access log is aiohttp's plain
    # one, not the server's masking one: tokens are left to tests/integration/
    # test_log_hygiene.py, which runs the real server).
    for secret in (PATIENT, "赵", REASON, RELATIVE, FINDINGS, "ecg photo", "Dr. Wang"):
        assert secret not in caplog.text, secret


# ------------------------------------------------------------------ site boundaries


async def test_other_sites_get_404_and_a_request_without_partnership_403_with_the_reason(
    harness: Harness, world: World, browsers: list[Browser]
) -> None:
    w = world
    doctor, village, admin, expert2 = browsers
    await doctor.login("dr-wang")
    cid = await _requested(w, doctor)
    request = await w.service.clinic.requests.of_consultation(cid)
    assert request is not None
    await village.login("dr-village")
    for path in (f"/console/consultations/{cid}", f"/console/consultations/{cid}/appointment.ics"):
        assert (await village.get(path))[0] == 404, path
    status, _, _ = await village.post(
        f"/console/requests/{request.id}/accept", {"start": "2030-01-01T10:00", "minutes": "30"}
    )
    assert status == 404
    status, _, body = await village.post(
        f"/console/consultations/{cid}/invitations", {"name": "Mole", "role": "patient"}
    )
    assert status == 404 and "Mole" not in body
    # Asking a department the site has no partnership with: 403, and the page says why.
    form = _request_form(w)
    status, _, body = await village.post("/console/requests", form)
    assert status == 403
    assert 'data-code="no_partnership"' in body and "no partnership with this department" in body
    status, data = await village.api(
        "POST",
        "/requests",
        {"department": w.cardio, "urgency": "routine", "reason": "x", "patient": "P"},
    )
    assert status == 403 and data["error"] == "no_partnership"
    assert "partnership" in str(data["message"])
    # The village doctor's consoles list nothing of the township's.
    status, body = await village.get("/console")
    assert status == 200 and PATIENT not in body and cid not in body
    status, data = await village.api("GET", "/consultations")
    assert status == 200 and data["consultations"] == []
    assert (await village.api("GET", f"/consultations/{cid}"))[0] == 404
    # An administrator sees no patients, even of their own site.
    await admin.login("thc-admin")
    assert (await admin.get(f"/console/consultations/{cid}"))[0] in (303, 404)
    assert (await admin.api("GET", f"/consultations/{cid}"))[0] == 404
    # Another expert of the hospital sees the request, but cannot join or sign for it.
    await expert2.login("dr-chen")
    status, body = await expert2.get(f"/console/consultations/{cid}")
    assert status == 200 and PATIENT in body
    await w.service.clinic.requests.accept(
        w.expert.actor, request.id, datetime.now(UTC) + timedelta(minutes=5), 30
    )
    status, _, body = await expert2.post(f"/console/consultations/{cid}/join", {})
    assert status == 403 and 'data-code="not_taking_part"' in body
    status, _, _ = await expert2.post(
        f"/console/consultations/{cid}/opinions",
        {"findings": "x", "impression": "y", "recommendations": "z"},
    )
    assert status == 403
    assert await w.service.clinic.opinions.versions(w.doctor.actor, cid) == []


# ------------------------------------------------------------------ CSRF and the API


async def test_csrf_guards_clinical_forms_and_the_api_and_tokens_act_for_their_site(
    harness: Harness, world: World, browsers: list[Browser]
) -> None:
    w = world
    doctor = browsers[0]
    await doctor.login("dr-wang")
    status, _, _ = await doctor.post(
        "/console/consultations", {"kind": "joint", "minutes": "30"}, csrf=False
    )
    assert status == 403
    form = _request_form(w, ("a.pdf", pdf(), "application/pdf"))
    status, _, _ = await doctor.post("/console/requests", form, csrf=False)
    assert status == 403  # a multipart form without its token: refused, not a crash
    status, _ = await doctor.api("POST", "/consultations", {"kind": "joint"}, csrf=False)
    assert status == 403
    assert (
        await w.service.clinic.consultations.summaries(
            w.doctor.actor, since=datetime.now(UTC) - timedelta(hours=1)
        )
        == []
    )
    status, started = await doctor.api("POST", "/consultations", {"kind": "joint", "patient": "P"})
    assert status == 201 and started["state"] == "open"
    status, data = await doctor.api("POST", "/consultations", {"kind": "joint", "x": 1})
    assert status == 400 and data["error"] == "invalid" and "x" in str(data["message"])

    # A site's API token: no CSRF, acts for its site, never for another, never as a person.
    issued = await w.service.frontdesk.desk.api_tokens.issue(ROOT, w.thc, "HIS")
    bearer = {"Authorization": f"Bearer {issued.secret}"}
    async with aiohttp.ClientSession() as his:
        async with his.post(
            f"{harness.base_url}/api/frontdesk/requests",
            headers=bearer,
            json={
                "department": w.cardio,
                "urgency": "emergency",
                "reason": "Stroke signs",
                "patient": PATIENT,
                "preferred_times": [],
            },
        ) as resp:
            assert resp.status == 201, await resp.text()
            made = await resp.json()
        async with his.get(
            f"{harness.base_url}/api/frontdesk/consultations/{made['id']}", headers=bearer
        ) as resp:
            detail = await resp.json()
            assert resp.status == 200 and detail["patient"] == PATIENT
            assert [e["kind"] for e in detail["timeline"]] == ["requested"]
        async with his.post(
            f"{harness.base_url}/api/frontdesk/requests/{made['request']}/accept",
            headers=bearer,
            json={"start": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
        ) as resp:
            assert resp.status == 403, await resp.text()
            assert (await resp.json())["error"] == "person_only"
        async with his.get(
            f"{harness.base_url}/api/frontdesk/consultations",
            headers={"Authorization": "Bearer tcs_" + "A" * 43},
        ) as resp:
            assert resp.status == 401
        other = await w.service.frontdesk.desk.api_tokens.issue(ROOT, w.village, "HIS")
        async with his.get(
            f"{harness.base_url}/api/frontdesk/consultations/{made['id']}",
            headers={"Authorization": f"Bearer {other.secret}"},
        ) as resp:
            assert resp.status == 404
    entry = next(
        e for e in harness.server.audit.entries() if e["action"] == "consultation_requested"
    )
    assert entry["by"] == issued.token.id and entry["site"] == w.thc


# ------------------------------------------------------------------ uploads


async def test_bad_uploads_are_refused_clearly_and_the_server_lives(
    harness: Harness, world: World, browsers: list[Browser]
) -> None:
    w = world
    doctor = browsers[0]
    await doctor.login("dr-wang")
    cid = await _requested(w, doctor)
    path = f"/console/consultations/{cid}/attachments"
    refusals = {
        "bad_type": ("notes.txt", b"just some text", "image/jpeg"),
        "bad_image": ("broken.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 64, "image/jpeg"),
        "bad_pdf": ("cut.pdf", pdf()[:-40], "application/pdf"),
    }
    for code, (name, data, content_type) in refusals.items():
        form = aiohttp.FormData()
        form.add_field("attachments", data, filename=name, content_type=content_type)
        status, _, body = await doctor.post(path, form)
        assert status == 400 and f'data-code="{code}"' in body, (code, status, body[:300])
    # Over the limit: refused from its Content-Length, before the body is read.
    token = await doctor.csrf()
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.http.port)
    cookie = "; ".join(f"{c.key}={c.value}" for c in doctor.http.cookie_jar)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nX-CSRF-Token: {token}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {MAX_UPLOAD_BODY + 1}\r\n\r\n".encode()
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert status_line.split()[1] == b"413", status_line
    writer.close()
    # Not logged in: 401 before a byte of a large body is read.
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.post(
            harness.base_url + path,
            data=b"x" * 300_000,
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        ) as resp:
            assert resp.status == 401
    # A file above the app's 256 KiB body limit goes through on the upload forms.
    big = jpeg_with_gps(width=1200, height=900)
    big = big[:-2] + b"\0" * max(0, 400_000 - len(big)) + big[-2:]
    form = aiohttp.FormData()
    form.add_field("attachments", big, filename="big.jpg", content_type="image/jpeg")
    status, _, body = await doctor.post(path, form)
    assert status == 303, body[:500]
    assert len(await w.service.clinic.attachments.list(w.doctor.actor, cid)) == 1
    async with doctor.http.get(harness.base_url + "/healthz") as resp:
        assert resp.status == 200


# ------------------------------------------------------------------ live notices


async def _read_events(resp: aiohttp.ClientResponse, seen: list[str]) -> None:
    async for line in resp.content:
        seen.append(line.decode().strip())


async def test_a_new_request_reaches_the_experts_console_within_a_second(
    harness: Harness, world: World, browsers: list[Browser]
) -> None:
    w = world
    doctor, expert, village, admin = browsers
    await doctor.login("dr-wang")
    await expert.login("dr-zhang")
    await village.login("dr-village")
    await admin.login("thc-admin")
    seen_expert: list[str] = []
    # Another site's doctor, and the requesting site's own admin (who sees no patients).
    seen_others: list[str] = []
    events = w.service.frontdesk.events
    async with (
        expert.http.get(expert.base + "/console/events") as a,
        village.http.get(village.base + "/console/events") as b,
        admin.http.get(admin.base + "/console/events") as c,
    ):
        readers = [
            asyncio.create_task(_read_events(a, seen_expert)),
            asyncio.create_task(_read_events(b, seen_others)),
            asyncio.create_task(_read_events(c, seen_others)),
        ]
        try:
            deadline = time.monotonic() + 5
            while events.subscribers < 3 and time.monotonic() < deadline:  # type: ignore[attr-defined]
                await asyncio.sleep(0.01)
            await _requested(w, doctor)
            sent = time.monotonic()  # the change is made once the form's answer is back
            while "event: changed" not in seen_expert and time.monotonic() < sent + 1.0:
                await asyncio.sleep(0.02)
            assert "event: changed" in seen_expert, seen_expert
            data = next(line for line in seen_expert if line.startswith("data:"))
            assert json.loads(data[5:]) == {
                "topic": "consultations",
                "sites": sorted([w.thc, w.hosp]),
            }
            await asyncio.sleep(0.2)
            assert "event: changed" not in seen_others
        finally:
            for reader in readers:
                reader.cancel()


# ------------------------------------------------------------------ links


async def test_rescheduling_revokes_the_old_links_and_issues_new_ones(
    harness: Harness, world: World, browsers: list[Browser]
) -> None:
    w = world
    doctor, expert, _, _ = browsers
    await doctor.login("dr-wang")
    await expert.login("dr-zhang")
    status, started = await doctor.api("POST", "/consultations", {"kind": "one_to_one"})
    assert status == 201
    cid = str(started["id"])
    status, invited = await doctor.api(
        "POST", f"/consultations/{cid}/invitations", {"name": RELATIVE}
    )
    assert status == 201
    old_url = str(invited["url"])
    _, own_link, _ = await doctor.post(f"/console/consultations/{cid}/join", {})
    async with aiohttp.ClientSession() as patient:
        async with patient.get(old_url) as resp:
            assert resp.status == 200 and "join" in await resp.text()
        later = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
        status, moved = await doctor.api(
            "POST", f"/consultations/{cid}/appointment", {"start": later.isoformat(), "minutes": 20}
        )
        assert status == 200 and moved["sequence"] == 1
        for revoked in (old_url, harness.base_url + own_link):
            async with patient.get(revoked) as resp:
                page = await resp.text()
                assert resp.status == 401 and 'data-reason="revoked"' in page
        links = await w.service.clinic.invitations.links(cid)
        assert [i.live for i in links] == [True, False]
        _, _, new_url, name = await w.service.link(w.doctor.actor, links[0].id, harness.base_url)
        assert name.text == RELATIVE and new_url != old_url
        grant = tokens.verify(harness.config.secret, new_url.rsplit("/", 1)[1], check_times=False)
        assert grant.not_before == int((later - timedelta(minutes=15)).timestamp())
        assert (
            grant.identity
            == tokens.verify(
                harness.config.secret, old_url.rsplit("/", 1)[1], check_times=False
            ).identity
        )
        async with patient.get(new_url) as resp:
            assert 'data-reason="early"' in await resp.text()
        # Moved again: that link, still early, is revoked, and its page says so (not "early").
        status, _ = await doctor.api(
            "POST",
            f"/consultations/{cid}/appointment",
            {"start": (later + timedelta(days=1)).isoformat()},
        )
        assert status == 200
        async with patient.get(new_url) as resp:
            page = await resp.text()
            assert 'data-reason="revoked"' in page and "come-back" not in page
    entry = next(
        e for e in harness.server.audit.entries() if e["action"] == "consultation_rescheduled"
    )
    assert entry["revoked"] == 2 and entry["reissued"] == 1  # the doctor's own link too
    _, fresh_link, _ = await doctor.post(f"/console/consultations/{cid}/join", {})
    assert fresh_link != own_link


async def test_join_mints_the_staff_members_own_link(
    harness: Harness, world: World, browsers: list[Browser]
) -> None:
    w = world
    doctor, nurse, _, _ = browsers
    await doctor.login("dr-wang")
    await nurse.login("nurse-li")
    status, started = await doctor.api(
        "POST", "/consultations", {"kind": "ward_round", "minutes": 60}
    )
    cid = str(started["id"])
    for browser, member, role in ((doctor, w.doctor, "doctor"), (nurse, w.nurse, "nurse")):
        status, location, _ = await browser.post(f"/console/consultations/{cid}/join", {})
        assert status == 303 and location.startswith("/join/"), location
        grant = tokens.verify(harness.config.secret, location.split("/join/", 1)[1])
        assert grant.identity == f"staff-{member.id}" and grant.role == role
        assert grant.name == member.display_name and grant.kind == "ward_round"
        assert grant.expires_at - grant.not_before <= (60 + 30) * 60
        # Again: the same live link.
        _, again, _ = await browser.post(f"/console/consultations/{cid}/join", {})
        assert again == location
    admin = browsers[2]
    await admin.login("thc-admin")
    status, location, _ = await admin.post(f"/console/consultations/{cid}/join", {})
    assert status == 303 and location == "/console/admin"


async def test_a_shredded_consultation_still_shows_its_record_without_content(
    harness: Harness, world: World, browsers: list[Browser]
) -> None:
    w = world
    doctor = browsers[0]
    await doctor.login("dr-wang")
    cid = await _requested(w, doctor, ("report.pdf", pdf(), "application/pdf"))
    assert RecordingStore(harness.config.data_dir).keystore.destroy_key(cid)
    status, body = await doctor.get(f"/console/consultations/{cid}")
    assert status == 200 and PATIENT not in body and REASON not in body
    assert body.count('data-state="shredded"') >= 3  # patient, reason, file name
    status, data = await doctor.api("GET", f"/consultations/{cid}")
    assert status == 200 and data["patient"] is None and data["patient_state"] == "shredded"
    attachment = (await w.service.clinic.attachments.list(w.doctor.actor, cid))[0]
    assert (await doctor.get(f"/console/attachments/{attachment.id}"))[0] == 410
    status, body = await doctor.get("/console")
    assert status == 200 and 'data-state="shredded"' in body
