"""A ward round's agenda of beds: set up over the front desk's API, kept sealed with the
consultation, moved through by the attending, seen by everyone in the call (clinical text by
clinicians only), and each bed's summary filed with the record when the round moves on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from rooms.consultation import ConsultationKind
from rooms.records.access import Actor
from rooms.records.passwords import Passwords
from rooms.records.sites import SiteKind
from rooms.records.staff import StaffMember
from rooms.roles import Role, StaffRole
from signaling import protocol as p
from signaling.bot import Bot
from signaling.console.clinic import CLINIC
from tests.integration.conftest import Harness
from tests.integration.test_frontdesk_clinic_http import PASSWORD, Browser

WARD = ConsultationKind.ward_round
TIMEOUT = 10.0
NOTE = "Post-op day 2, drain 80 ml, Hb 92"
REF = "HIS-0042-7781"


def _agenda(bot: Bot) -> p.AgendaState | None:
    states = [e for e in bot.events if isinstance(e, p.AgendaState)]
    return states[-1] if states else None


def _at(bot: Bot, label: str | None) -> Any:
    def check() -> bool:
        state = _agenda(bot)
        if state is None:
            return False
        return (state.current.label if state.current else None) == label

    return check


async def _staff(harness: Harness) -> tuple[StaffMember, StaffMember]:
    service = harness.http.app[CLINIC]
    desk = service.frontdesk.desk
    desk.staff.passwords = Passwords.for_tests()
    root = Actor.command_line("tests")
    site = await desk.sites.create(root, SiteKind.township_health_centre, "Hetian THC")

    async def member(username: str, role: StaffRole) -> StaffMember:
        return await desk.staff.add(
            root,
            username=username,
            display_name=username,
            password=PASSWORD,
            role=role,
            site_id=site.id,
        )

    return await member("dr-wang", StaffRole.doctor), await member("dr-zhang", StaffRole.expert)


@pytest.fixture
async def browser(harness: Harness) -> AsyncIterator[Browser]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield Browser(harness.base_url, session)


async def test_the_agenda_is_set_up_kept_sealed_and_moved_through_by_the_attending(
    harness: Harness, browser: Browser
) -> None:
    doctor, _expert_staff = await _staff(harness)
    service = harness.http.app[CLINIC]
    ward = await service.start_now(doctor.actor, "ward_round", 60, "Zhao Xiaoming")
    joint = await service.start_now(doctor.actor, "joint", 30, "Zhao Xiaoming")
    await browser.login("dr-wang")
    path = f"/consultations/{ward.id}/agenda"

    beds = []
    for label in ("3-12", "3-14", "3-15"):
        status, body = await browser.api(
            "POST", path, {"label": label, "patient_ref": REF, "note": NOTE}
        )
        assert status == 201, body
        beds.append(body["id"])
    # Bad input: too long, unknown fields, not a ward round.
    status, body = await browser.api("POST", path, {"label": "x" * 41})
    assert status == 400 and body["error"] == "invalid"
    status, body = await browser.api("POST", path, {"label": "1", "name": "Zhao"})
    assert status == 400
    status, body = await browser.api("POST", f"/consultations/{joint.id}/agenda", {"label": "1"})
    assert status == 409 and body["error"] == "not_ward_round"

    attending = harness.bot(harness.token(ward.id, Role.doctor, "Dr. Wang", kind=WARD))
    expert = harness.bot(harness.token(ward.id, Role.expert, "Dr. Zhang", kind=WARD))
    student = harness.bot(harness.token(ward.id, Role.observer, "Student Liu", kind=WARD))
    for bot in (attending, expert, student):
        await bot.connect()
    for bot in (attending, expert, student):
        assert await bot.wait_for(lambda b=bot: _agenda(b) is not None, TIMEOUT)
    first = _agenda(expert)
    assert first is not None and first.current is None and first.total == 3
    assert first.next is not None and first.next.label == "3-12"

    # Only the attending leads.
    await expert.send(p.AgendaNext(type="agenda_next"))
    assert await expert.wait_for(lambda: any(e.ref == "agenda_next" for e in expert.errors), 5)
    assert expert.errors[-1].code == "forbidden"

    await attending.send(p.AgendaNext(type="agenda_next"))
    for bot in (attending, expert, student):
        assert await bot.wait_for(_at(bot, "3-12"), TIMEOUT)
    at_expert, at_student = _agenda(expert), _agenda(student)
    assert at_expert and at_expert.current and at_expert.next
    assert at_expert.current.note == NOTE and at_expert.current.patientRef == REF
    assert at_expert.next.label == "3-14" and at_expert.position == 1
    # An observer (a student, family) sees the label only.
    assert at_student and at_student.current
    assert at_student.current.note is None and at_student.current.patientRef is None

    # At this bed the expert gets the floor: it goes into the bed's summary.
    await attending.send(p.GiveFloor(type="give_floor", participantId=expert.participant_id))
    assert await expert.wait_for(
        lambda: any(isinstance(e, p.FloorState) and e.holder for e in expert.events), 5
    )
    await attending.send(p.AgendaGoto(type="agenda_goto", bedId=beds[2]))
    for bot in (attending, expert, student):
        assert await bot.wait_for(_at(bot, "3-15"), TIMEOUT)
    last = _agenda(student)
    assert last and last.next is None and last.position == 3

    # A bed added during the round reaches everyone at once.
    status, body = await browser.api("POST", path, {"label": "3-16"})
    assert status == 201
    assert await student.wait_for(
        lambda: (s := _agenda(student)) is not None and s.total == 4 and s.next is not None, 5
    )
    # Past the last bed: the round is done.
    await attending.send(p.AgendaNext(type="agenda_next"))
    assert await student.wait_for(_at(student, "3-16"), 5)
    await attending.send(p.AgendaNext(type="agenda_next"))
    assert await student.wait_for(lambda: (s := _agenda(student)) is not None and s.done, 5)

    # The host reads the summaries after the round: who was there, who had the floor.
    await asyncio.sleep(0.3)
    status, body = await browser.api("GET", path)
    assert status == 200
    summaries = {b["label"]: b["summary"] for b in body["beds"]}  # type: ignore[union-attr]
    bed1 = summaries["3-12"]
    assert bed1 is not None and bed1["floor"] == ["Dr. Zhang"]
    assert set(bed1["present"]) == {"Dr. Wang", "Dr. Zhang", "Student Liu"}
    assert "Dr. Zhang" in bed1["heard"] and "Student Liu" not in bed1["heard"]
    assert summaries["3-14"] is None  # skipped
    assert summaries["3-15"] is not None and summaries["3-15"]["floor"] == []
    # ...and on the consultation's page in the console.
    status, html = await browser.get(f"/console/consultations/{ward.id}")
    assert status == 200
    section = html.split('id="ward-summary"', 1)[1].split("</section>", 1)[0]
    assert "3-12" in section and "Dr. Zhang" in section and NOTE in section

    # Sealed at rest: neither the note, the reference nor a name is in the database files.
    files = list(harness.config.data_dir.glob("records.db*"))
    raw = b"".join(f.read_bytes() for f in files)
    assert files and b"bed_" in raw
    assert NOTE.encode() not in raw and REF.encode() not in raw and b"Dr. Zhang" not in raw
    actions = [e["action"] for e in harness.server.audit.entries()]
    assert "agenda_bed_added" in actions and "agenda_moved" in actions
    assert "bed_summary_filed" in actions


async def test_an_expert_cannot_change_the_agenda_and_a_call_without_a_record_has_none(
    harness: Harness, browser: Browser, consultation: str
) -> None:
    doctor, _ = await _staff(harness)
    service = harness.http.app[CLINIC]
    ward = await service.start_now(doctor.actor, "ward_round", 60, None)
    await browser.login("dr-zhang")
    status, body = await browser.api("POST", f"/consultations/{ward.id}/agenda", {"label": "1"})
    assert status == 403, body

    attending = harness.bot(harness.token(consultation, Role.doctor, kind=WARD))
    await attending.connect()
    assert await attending.wait_for(lambda: _agenda(attending) is not None, TIMEOUT)
    state = _agenda(attending)
    assert state is not None and state.total == 0
    await attending.send(p.AgendaNext(type="agenda_next"))
    assert await attending.wait_for(lambda: bool(attending.errors), 5)
    assert attending.errors[-1].code == "unexpected"


def _beds_section(html: str) -> str:
    return html.split('id="ward-summary"', 1)[1].split("</section>", 1)[0]


async def test_the_attending_sets_up_the_beds_on_the_consultation_page(
    harness: Harness, browser: Browser
) -> None:
    doctor, _ = await _staff(harness)
    service = harness.http.app[CLINIC]
    ward = await service.start_now(doctor.actor, "ward_round", 60, None)
    await browser.login("dr-wang")
    page = f"/console/consultations/{ward.id}"
    status, html = await browser.get(page)
    assert status == 200 and 'id="add-bed-form"' in html
    # A round already in progress: the call sees each change at once.
    attending = harness.bot(harness.token(ward.id, Role.doctor, "Dr. Wang", kind=WARD))
    await attending.connect()
    assert await attending.wait_for(lambda: _agenda(attending) is not None, TIMEOUT)

    for label in ("5-01", "5-02", "5-03"):
        status, location, body = await browser.post(
            f"{page}/agenda", {"label": label, "patient_ref": REF, "note": NOTE}
        )
        assert status == 303, body
        assert location == f"{page}?done=bed_added#ward-summary"
    beds = await service.clinic.ward.beds(ward.id)
    assert [b.label for b in beds] == ["5-01", "5-02", "5-03"]
    status, html = await browser.get(page)
    section = _beds_section(html)
    assert all(label in section for label in ("5-01", "5-02", "5-03"))
    assert NOTE in section and REF in section
    assert section.count("data-remove-bed=") == 3
    assert await attending.wait_for(lambda: (s := _agenda(attending)) and s.total == 3, 5)

    # One taken off through its own form.
    status, location, _ = await browser.post(f"{page}/agenda/{beds[1].id}/remove", {})
    assert status == 303 and location == f"{page}?done=bed_removed#ward-summary"
    assert [b.label for b in await service.clinic.ward.beds(ward.id)] == ["5-01", "5-03"]
    assert await attending.wait_for(lambda: (s := _agenda(attending)) and s.total == 2, 5)
    status, html = await browser.get(page)
    section = _beds_section(html)
    assert "5-01" in section and "5-03" in section and "5-02" not in section
    # The API reads the same agenda.
    status, body = await browser.api("GET", f"/consultations/{ward.id}/agenda")
    assert status == 200
    assert [b["label"] for b in body["beds"]] == ["5-01", "5-03"]  # type: ignore[index]

    # A label too long is refused on the page, with the reason, and nothing is added.
    status, _, html = await browser.post(f"{page}/agenda", {"label": "x" * 41})
    assert status == 400 and 'id="add-bed-form"' in html
    assert len(await service.clinic.ward.beds(ward.id)) == 2
    actions = [e["action"] for e in harness.server.audit.entries()]
    assert actions.count("agenda_bed_added") == 3 and "agenda_bed_removed" in actions


async def test_the_bed_forms_want_a_csrf_token_and_the_right_to_change_the_agenda(
    harness: Harness, browser: Browser
) -> None:
    doctor, expert = await _staff(harness)
    service = harness.http.app[CLINIC]
    ward = await service.start_now(doctor.actor, "ward_round", 60, None)
    bed = await service.clinic.ward.add(ward.id, "7-01", "", "")
    page = f"/console/consultations/{ward.id}"

    await browser.login("dr-wang")
    status, _, _ = await browser.post(f"{page}/agenda", {"label": "7-02"}, csrf=False)
    assert status == 403
    status, _, _ = await browser.post(f"{page}/agenda/{bed.id}/remove", {}, csrf=False)
    assert status == 403
    assert [b.label for b in await service.clinic.ward.beds(ward.id)] == ["7-01"]

    # An expert in the consultation may see it, but not change its agenda: no form, and
    # the form's POST refused all the same.
    await service.add_staff(doctor.actor, ward.id, expert.id)
    browser.http.cookie_jar.clear()
    await browser.login("dr-zhang")
    status, html = await browser.get(page)
    assert status == 200 and 'id="add-bed-form"' not in html and "data-remove-bed" not in html
    assert "7-01" in _beds_section(html)
    status, _, _ = await browser.post(f"{page}/agenda", {"label": "7-02"})
    assert status == 403
    status, _, _ = await browser.post(f"{page}/agenda/{bed.id}/remove", {})
    assert status == 403
    assert [b.label for b in await service.clinic.ward.beds(ward.id)] == ["7-01"]
