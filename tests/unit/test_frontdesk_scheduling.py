"""Scheduling windows and the links made for them: nbf 15 minutes before the start, exp at
the end plus the grace period; the join page's too-early page; the QR code decodes back to
the link; the .ics file."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from rooms.consultation import ConsultationKind
from rooms.records.consultations import Consultation, Origin
from rooms.records.errors import InvalidInput
from rooms.records.scheduling import (
    GRACE,
    LEAD,
    Appointment,
    check_slot,
    link_validity,
    window,
)
from rooms.roles import Role
from signaling import tokens
from signaling.config import ServerConfig
from signaling.console.calendar import appointment_ics
from signaling.console.links import join_url, mint_link, qr_png, staff_identity
from signaling.http import appkeys
from signaling.http.pages import setup_pages
from tests.clinic_images import decode_qr

SECRET = secrets.token_bytes(32)
START = datetime(2026, 12, 3, 2, 30, tzinfo=UTC)


def _consultation() -> Consultation:
    return Consultation(
        id="c0nsultation-1",
        kind=ConsultationKind.joint,
        origin=Origin.request,
        site_id="site_1",
        department_id="dept_1",
        expert_site_id="site_2",
        created_by="stf_1",
        created_at=START - timedelta(days=1),
        patient_name_sealed=None,
    )


def _appointment(start: datetime = START, minutes: int = 40, sequence: int = 0) -> Appointment:
    return Appointment(
        "apt_0123456789abcdef",
        "c0nsultation-1",
        start,
        minutes,
        sequence,
        "stf_2",
        START - timedelta(days=1),
    )


def test_a_window_runs_from_15_minutes_before_to_the_end_plus_grace() -> None:
    slot = window(START, 40)
    assert slot.opens_at == START - timedelta(minutes=15) == START - LEAD
    assert slot.closes_at == START + timedelta(minutes=40) + GRACE
    assert GRACE == timedelta(minutes=30)
    assert not slot.contains(START - timedelta(minutes=15, seconds=1))
    assert slot.contains(START - timedelta(minutes=15))
    assert slot.contains(START + timedelta(minutes=69, seconds=59))
    assert not slot.contains(START + timedelta(minutes=70))


def test_a_link_made_before_the_window_waits_for_it_and_one_made_inside_starts_now() -> None:
    slot = window(START, 40)
    before = link_validity(slot, START - timedelta(days=2))
    assert before == slot
    inside = START + timedelta(minutes=5)
    assert link_validity(slot, inside).opens_at == inside
    with pytest.raises(InvalidInput) as over:
        link_validity(slot, slot.closes_at)
    assert over.value.code == "over"


def test_slots_are_checked() -> None:
    now = START - timedelta(days=1)
    check_slot(START, 40, now)
    for start, minutes, code in (
        (START, 4, "bad_duration"),
        (START, 12 * 60 + 1, "bad_duration"),
        (now - timedelta(minutes=6), 30, "past"),
        (now + timedelta(days=361), 30, "too_far"),
    ):
        with pytest.raises(InvalidInput) as refused:
            check_slot(start, minutes, now)
        assert refused.value.code == code
    with pytest.raises(InvalidInput):
        check_slot(START.replace(tzinfo=None), 30, now)


def test_a_minted_link_carries_the_window_as_nbf_and_exp() -> None:
    now = START - timedelta(days=2)
    link = mint_link(
        SECRET,
        _consultation(),
        _appointment(),
        role=Role.patient,
        identity="u-1",
        name="Patient Zhao",
        now=now,
    )
    grant = tokens.verify(SECRET, link.token, check_times=False)
    assert grant.not_before == int((START - LEAD).timestamp())
    assert grant.expires_at == int((START + timedelta(minutes=40) + GRACE).timestamp())
    assert grant.token_id == link.jti and grant.role == "patient" and grant.kind == "joint"
    assert (link.valid_from, link.valid_until) == (START - LEAD, START + timedelta(minutes=70))
    # Opened too early: refused, saying from when; inside the window: fine; after: expired.
    with pytest.raises(tokens.NotYetValidToken) as early:
        tokens.verify(SECRET, link.token, now=(START - timedelta(minutes=16)).timestamp())
    assert early.value.valid_from == grant.not_before
    tokens.verify(SECRET, link.token, now=(START - timedelta(minutes=14)).timestamp())
    with pytest.raises(tokens.ExpiredToken):
        tokens.verify(SECRET, link.token, now=(START + timedelta(minutes=71)).timestamp())
    staff = mint_link(
        SECRET,
        _consultation(),
        _appointment(),
        role=Role.expert,
        identity=staff_identity("stf_9"),
        name="Dr. Zhang",
        now=now,
    )
    assert tokens.verify(SECRET, staff.token, check_times=False).identity == "staff-stf_9"


@pytest.mark.parametrize("name", ["赵小明 Zhao Xiaoming", "Li", "Abdurehim " * 19])
def test_the_qr_code_decodes_back_to_the_link(name: str) -> None:
    for _ in range(10):  # every link is different (its jti): try a few
        link = mint_link(
            SECRET,
            _consultation(),
            _appointment(),
            role=Role.patient,
            identity="u-1",
            name=name,
            now=START - timedelta(days=1),
        )
        url = join_url("https://teleconsult.example.org:8443", link.token)
        image = cv2.imdecode(np.frombuffer(qr_png(url), np.uint8), cv2.IMREAD_GRAYSCALE)
        assert decode_qr(image) == url
        # Larger and a little blurred, as a phone's camera sees a printed page.
        photo = cv2.GaussianBlur(
            cv2.resize(image, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR), (3, 3), 0
        )
        assert decode_qr(photo) == url


def _unfold(text: str) -> list[str]:
    return text.replace("\r\n ", "").split("\r\n")


def test_the_calendar_file() -> None:
    summary = "专家会诊 · 心内科, night; shift\\x"
    ics = appointment_ics(
        _appointment(sequence=2),
        summary=summary,
        description="Join from your console.\nOK",
        url="https://h.example/console/consultations/c0nsultation-1",
        now=START,
    )
    assert ics.endswith("\r\n") and "\n" not in ics.replace("\r\n", "")
    assert all(len(line.encode()) <= 75 for line in ics.split("\r\n"))
    lines = _unfold(ics)
    assert lines[0] == "BEGIN:VCALENDAR" and lines[-2] == "END:VCALENDAR"
    assert "UID:apt_0123456789abcdef@teleconsult" in lines
    assert "DTSTART:20261203T023000Z" in lines and "DTEND:20261203T031000Z" in lines
    assert "SEQUENCE:2" in lines and "DTSTAMP:20261203T023000Z" in lines
    assert "SUMMARY:专家会诊 · 心内科\\, night\\; shift\\\\x" in lines
    assert "DESCRIPTION:Join from your console.\\nOK" in lines


# ------------------------------------------------------------------ the too-early page


@pytest.fixture
async def pages(tmp_path: Path):  # type: ignore[no-untyped-def]
    app = web.Application()
    app[appkeys.CONFIG] = ServerConfig(data_dir=tmp_path, secret=SECRET)
    setup_pages(app)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def test_a_link_opened_too_early_says_when_to_come_back(pages: TestClient) -> None:  # type: ignore[type-arg]
    now = datetime.now(UTC)
    start = (now + timedelta(days=1)).replace(microsecond=0)
    link = mint_link(
        SECRET,
        _consultation(),
        _appointment(start),
        role=Role.patient,
        identity="u-1",
        name="Patient",
        now=now,
    )
    opens = start - LEAD
    for lang, words in (("en", "Please come back at"), ("zh-CN", "请在以下时间再打开此链接")):
        resp = await pages.get(f"/join/{link.token}?lang={lang}")
        body = await resp.text()
        assert resp.status == 401 and 'data-reason="early"' in body and words in body
        assert f'datetime="{opens.strftime("%Y-%m-%dT%H:%M:%SZ")}"' in body
        assert opens.strftime("%Y-%m-%d %H:%M UTC") in body
        assert "/static/localtime.js" in body and link.token not in body
    # Expired and invalid links keep their own pages.
    old = tokens.mint(
        SECRET,
        consultation_id="c0nsultation-1",
        kind="joint",
        identity="u",
        name="P",
        role="patient",
        ttl_s=60,
        now=now.timestamp() - 3600,
    )
    body = await (await pages.get(f"/join/{old}")).text()
    assert 'data-reason="expired"' in body and "come-back" not in body
    body = await (await pages.get("/join/not-a-token")).text()
    assert 'data-reason="invalid"' in body
