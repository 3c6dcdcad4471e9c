"""Call quality kept with the consultation: during a real call (bots through the real
protocol and Worker) the Worker samples each participant, the node writes the samples to the
consultation's record, and after the call the host's consultation page shows each
participant's summary and a chart drawn as SVG, with roles and opaque ids, never a name."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from pathlib import Path

import aiohttp
import pytest

from media.clips import Clip
from media.config import MediaConfig
from rooms.consultation import new_consultation_id
from rooms.records.access import Actor
from rooms.records.passwords import Passwords
from rooms.records.sites import SiteKind
from rooms.roles import Role, StaffRole
from signaling.app import QUALITY
from signaling.config import ServerConfig
from signaling.console.clinic import CLINIC
from tests.integration.conftest import Harness

ROOT = Actor.command_line("tests")
PASSWORD = "a long enough password"
DOCTOR = "Dr. Wang Wei 王伟"
PATIENT = "Zhao Xiaoming 赵小明"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(
        data_dir=tmp_path,
        secret=secrets.token_bytes(32),
        media=MediaConfig(answer_timeout_s=5.0, quality_interval_s=1.0),
    )


async def _login(http: aiohttp.ClientSession, base: str, username: str) -> None:
    async with http.get(base + "/login") as resp:
        csrf = _CSRF.search(await resp.text())
    assert csrf
    data = {"csrf": csrf.group(1), "username": username, "password": PASSWORD}
    async with http.post(base + "/login", data=data, allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()


async def test_the_host_sees_each_participants_call_quality_after_the_call(
    harness: Harness, video_clip: Clip, audio_clip: Clip
) -> None:
    service = harness.http.app[CLINIC]
    desk = service.frontdesk.desk
    desk.staff.passwords = Passwords.for_tests()
    site = await desk.sites.create(ROOT, SiteKind.township_health_centre, "Hetian THC")
    doctor = await desk.staff.add(
        ROOT,
        username="dr-wang",
        display_name=DOCTOR,
        password=PASSWORD,
        role=StaffRole.doctor,
        site_id=site.id,
    )
    c = await service.start_now(doctor.actor, "joint", 30, PATIENT)

    host = harness.bot(harness.token(c.id, Role.doctor, DOCTOR), video=video_clip, audio=audio_clip)
    patient = harness.bot(
        harness.token(c.id, Role.patient, PATIENT), video=video_clip, audio=audio_clip
    )
    # A call by a bare link, without a record: nothing of it is kept.
    elsewhere = new_consultation_id()
    stranger = harness.bot(harness.token(elsewhere, Role.doctor), video=video_clip)
    for bot in (host, patient, stranger):
        await bot.connect()
    assert await host.wait_for(
        lambda: (
            host.frames_from(patient.participant_id, "video") > 30  # type: ignore[arg-type]
            and patient.frames_from(host.participant_id, "video") > 30
        ),  # type: ignore[arg-type]
        20,
    )
    quality = harness.http.app[QUALITY]
    deadline = time.monotonic() + 15
    while True:
        await quality.flush()
        rows = await service.clinic.quality.samples(c)
        by_role = {r.role: [x for x in rows if x.role == r.role] for r in rows}
        if len(by_role) == 2 and all(len(v) >= 3 for v in by_role.values()):
            break
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.3)
    for bot in (host, patient, stranger):
        await bot.close()
    await quality.flush()

    rows = await service.clinic.quality.samples(c)
    assert {r.participant_id for r in rows} == {host.participant_id, patient.participant_id}
    assert elsewhere not in await service.clinic.quality.consultations()
    steady = [r for r in rows if r.interval_s >= 0.9]
    for row in steady:
        # Loopback: nothing lost; both publish and receive video at the clip's rate.
        assert row.loss_in == 0.0 and row.kbps_in is not None and row.kbps_in > 0
        assert row.fps_in is not None and row.fps_in > 5
    assert any(r.fps_out is not None and r.fps_out > 5 for r in steady)
    assert any(r.rtt_ms is not None for r in rows)

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await _login(http, harness.base_url, "dr-wang")
        async with http.get(f"{harness.base_url}/console/consultations/{c.id}") as resp:
            assert resp.status == 200
            page = await resp.text()
    section = page.split('id="quality"', 1)[1].split("</section>", 1)[0]
    assert 'data-role="doctor"' in section and 'data-role="patient"' in section
    assert section.count('<svg class="quality-chart"') == 2
    assert section.count('class="q-line q-sent"') >= 4  # frame rate and loss, each of two
    assert re.search(r'points="(\d+\.\d,\d+\.\d ?){3,}"', section)
    for secret in (DOCTOR, PATIENT, host.joined.participant.name, "staff-"):  # type: ignore[union-attr]
        assert secret not in section
    assert host.participant_id[:7] in section  # type: ignore[index]
