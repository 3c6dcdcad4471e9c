"""The clinical consoles in headless Chromium against a real ``teleconsult serve``: a township
doctor requests a cardiology consultation with an image attachment; the expert, in a second
browser, sees it appear in the queue without reloading and accepts it with a time; the doctor
sees the acceptance, invites the patient, and the test decodes the QR code from the page's
image to get the link (which opens the join page); the expert files a signed opinion; the
doctor sees it and acknowledges it. In between, the whole call: the patient opens the link and
waits in the waiting room (no media reaches them: getStats() has nothing), the doctor and the
expert join from their consoles, the doctor admits the patient, and all three decode each
other; afterwards the consultation's page shows the doctor each participant's call quality.
The audit log holds every step. Screenshots of the doctor's console, the expert's console,
the invitation page, the call, the call quality and the opinion page (in en and zh-CN)
land in test-artifacts/clinic-*.png.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.clinic_images import decode_qr, jpeg_with_gps
from tests.e2e.helpers import (
    ARTIFACTS,
    REPO,
    STATS_JS,
    RunningServer,
    chromium,
    media_ok,
    needs_chromium,
    needs_loopback_namespace,
    wait_for,
)

pytestmark = [pytest.mark.browser, needs_chromium, needs_loopback_namespace]

PASSWORD = "a long enough password"
PATIENT = "Zhao Xiaoming"
REASON = "Chest pain for two hours; ECG photo attached."
LOCAL_IN_10_MIN = """() => {
  const d = new Date(Date.now() + 10 * 60 * 1000);
  const p = (n) => String(n).padStart(2, "0");
  const day = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
  return `${day}T${p(d.getHours())}:${p(d.getMinutes())}`;
}"""


def _cli(server: RunningServer, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "signaling.cli", *args, "--data-dir", str(server.data_dir)],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def _setup(server: RunningServer) -> None:
    thc = _cli(
        server,
        "sites",
        "add",
        "--kind",
        "township_health_centre",
        "--name",
        "Hetian Township Health Centre",
    )
    hosp = _cli(
        server,
        "sites",
        "add",
        "--kind",
        "expert_hospital",
        "--name",
        "Provincial People's Hospital",
    )
    cardio = _cli(server, "sites", "departments", hosp, "--add", "Cardiology")
    _cli(server, "sites", "partner", "--requester", thc, "--department", cardio)
    for username, name, role, site in (
        ("dr-wang", "Dr. Wang 王医生", "doctor", thc),
        ("dr-zhang", "Dr. Zhang 张主任", "expert", hosp),
    ):
        _cli(
            server,
            "staff",
            "add",
            "--username",
            username,
            "--name",
            name,
            "--role",
            role,
            "--site",
            site,
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )


async def _login(page: Any, base: str, username: str) -> None:
    await page.goto(f"{base}/login")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    async with page.expect_navigation():
        await page.click("#login-btn")
    assert page.url.endswith("/console"), page.url


async def _submit(page: Any, button: str) -> None:
    async with page.expect_navigation():
        await page.click(button)
    error = await page.evaluate("document.getElementById('error')?.textContent ?? null")
    assert error is None, error


async def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"clinic-{name}.png"), full_page=True)


async def _qr_link(page: Any) -> str:
    """The link in the invitation page's QR code, read from the image as shown."""
    await wait_for(page, "document.getElementById('qr').complete", 10)
    png = await page.locator("#qr").screenshot()
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    return decode_qr(image)


async def _request(page: Any, base: str, patient: str, reason: str, image: Path) -> str:
    await page.goto(f"{base}/console")
    await page.select_option("#request-form [name=urgency]", "urgent")
    await page.fill("#request-form [name=patient]", patient)
    await page.fill("#request-form [name=reason]", reason)
    await page.fill("#request-form [name=preferred] >> nth=0", await page.evaluate(LOCAL_IN_10_MIN))
    await page.set_input_files("#request-form [name=attachments]", str(image))
    await _submit(page, "#request-btn")
    assert "/console/consultations/" in page.url, page.url
    return str(page.url.split("/console/consultations/", 1)[1].split("?", 1)[0])


async def test_request_accept_invite_and_opinion_across_two_consoles(
    server: RunningServer, tmp_path: Path
) -> None:
    _setup(server)
    base = server.base_url
    image = tmp_path / "ecg.jpg"
    image.write_bytes(jpeg_with_gps(640, 360))
    async with chromium() as doctor_ctx, chromium() as expert_ctx, chromium() as patient_ctx:
        doctor = await doctor_ctx.new_page()
        expert = await expert_ctx.new_page()
        await _login(doctor, base, "dr-wang")
        await _login(expert, base, "dr-zhang")
        await wait_for(expert, "document.body.dataset.live === 'on'", 10)
        await expert.evaluate("window.__notReloaded = true")
        assert await expert.locator("[data-request]").count() == 0

        cid = await _request(doctor, base, PATIENT, REASON, image)
        sent = time.monotonic()
        await wait_for(expert, "!!document.querySelector('[data-request]')", 5, 0.05)
        seen_after = time.monotonic() - sent
        assert await expert.evaluate("window.__notReloaded === true"), "the expert's page reloaded"
        assert seen_after < 1.5, f"the request reached the queue after {seen_after:.2f}s"
        card = await expert.inner_text("[data-request]")
        assert PATIENT in card and REASON in card and "Urgent" in card
        await _shot(expert, "expert-console-en")

        # The doctor's page is open on the consultation: the acceptance shows up by itself.
        await doctor.evaluate("window.__notReloaded = true")
        await wait_for(doctor, "document.body.dataset.live === 'on'", 10)
        await _submit(expert, "[data-accept]")
        await wait_for(
            doctor,
            "document.querySelector('[data-live=summary] .state')?.dataset.state === 'open'",
            5,
            0.05,
        )
        assert await doctor.evaluate("window.__notReloaded === true")
        thumb = doctor.locator("[data-attachment] img.thumb")
        await wait_for(doctor, "document.querySelector('img.thumb')?.naturalWidth === 640", 10)
        assert await thumb.count() == 1

        # The patient's link: its QR code, read from the page's image, is the link.
        await doctor.fill("#invite-form [name=name]", PATIENT)
        await _submit(doctor, "#invite-btn")
        assert doctor.url.endswith("/print")
        link = await _qr_link(doctor)
        assert link == (await doctor.inner_text("#join-link")).strip()
        assert link.startswith(f"{base}/join/")
        await _shot(doctor, "invitation-en")
        patient = await patient_ctx.new_page()
        await patient.goto(link)
        assert await patient.locator("#join-btn, #join-view, [data-reason]").count() >= 1
        assert await patient.evaluate("document.querySelector('[data-reason]') === null")

        # The call: the patient waits; the doctor and the expert join from their consoles.
        await patient.goto(f"{link}?autojoin=1")
        await wait_for(patient, "window.teleconsult.state.phase === 'waiting'", 20)
        doctor_call = await _staff_join(doctor_ctx, doctor, base, cid)
        expert_call = await _staff_join(expert_ctx, expert, base, cid)
        await doctor_call.wait_for_selector("#waiting-panel:not([hidden])", timeout=10_000)
        assert PATIENT in await doctor_call.inner_text("#waiting-list")
        # The expert's media flows to the doctor meanwhile; none reaches the waiting patient.
        calls = [doctor_call, expert_call]
        await _decoding(calls, 1)
        assert await patient.evaluate(STATS_JS) is None
        await _shot(patient, "waiting-en")
        await doctor_call.click("#waiting-list .admit-btn")
        await _decoding([*calls, patient], 2)
        await _shot(doctor_call, "call-en")
        for page in (patient, expert_call, doctor_call):
            await page.click("#leave-btn")

        # How the call went, on the consultation's page: the Worker's samples reach the
        # record within seconds of the call; drawn on the server, shown under the CSP.
        roles = await _quality_shown(doctor, base, cid)
        assert {"doctor", "expert"} <= roles
        assert await doctor.locator("#quality svg.quality-chart polyline").count() >= 4
        assert PATIENT not in await doctor.inner_text("#quality")
        await doctor.locator("#quality").screenshot(
            path=str(ARTIFACTS / "clinic-call-quality-en.png")
        )

        # The expert signs an opinion; the doctor sees it arrive and acknowledges it.
        await expert.goto(f"{base}/console/consultations/{cid}")
        await expert.fill("#opinion-form [name=findings]", "ST elevation in V2-V4.")
        await expert.fill("#opinion-form [name=impression]", "Anterior STEMI.")
        await expert.fill("#opinion-form [name=recommendations]", "Transfer for PCI now.")
        await expert.fill("#opinion-form [name=follow_up]", "Cardiology clinic in 6 weeks.")
        await _submit(expert, "#opinion-btn")
        assert await expert.locator("[data-opinion][data-check=ok]").count() == 1

        await doctor.goto(f"{base}/console/consultations/{cid}")
        await wait_for(doctor, "document.body.dataset.live === 'on'", 10)
        opinion_id = await doctor.get_attribute("[data-opinion]", "data-opinion")
        assert "Anterior STEMI." in await doctor.inner_text("[data-opinion]")
        await _submit(doctor, "[data-acknowledge]")
        assert await doctor.locator("[data-opinion] .acknowledged").count() == 1
        await doctor.goto(f"{base}/console/opinions/{opinion_id}")
        assert await doctor.locator("#signature-ok").count() == 1
        await _shot(doctor, "opinion-en")
        await doctor.goto(f"{base}/console")
        assert await doctor.locator(f'[data-consultation="{cid}"]').count() == 1
        await _shot(doctor, "doctor-console-en")
        invitation_id = await _latest_invitation(doctor, base, cid)

    # Every step of the story is in the audit log, in order.
    story = [
        "staff_login",
        "consultation_requested",
        "request_accepted",
        "invitation_created",
        "waiting",
        "staff_join",
        "admitted",
        "opinion_filed",
        "opinion_acknowledged",
    ]
    async with asyncio.timeout(10):
        while not set(story) <= set(actions := _audit_actions(server)):
            await asyncio.sleep(0.2)
    positions = [actions.index(action) for action in story]
    assert positions == sorted(positions), list(zip(story, positions, strict=True))
    assert PATIENT not in (server.data_dir / "audit.log").read_text()

    # The same pages in zh-CN, with a second request so the expert's queue has one.
    async with chromium(locale="zh-CN") as doctor_ctx, chromium(locale="zh-CN") as expert_ctx:
        doctor = await doctor_ctx.new_page()
        expert = await expert_ctx.new_page()
        await _login(doctor, base, "dr-wang")
        await _login(expert, base, "dr-zhang")
        assert await doctor.evaluate("document.documentElement.lang") == "zh-CN"
        await _request(doctor, base, "李四", "发热三天，咳嗽，胸片附后。", image)
        await doctor.goto(f"{base}/console")
        assert "今日会诊" in await doctor.inner_text("#today h2")
        await _shot(doctor, "doctor-console-zh-CN")
        await expert.goto(f"{base}/console")
        assert "李四" in await expert.inner_text("[data-request]")
        assert "会诊申请队列" in await expert.inner_text("#queue h2")
        await _shot(expert, "expert-console-zh-CN")
        await doctor.goto(f"{base}/console/invitations/{invitation_id}/print")
        assert "您的视频会诊" in await doctor.inner_text("h1")
        assert await _qr_link(doctor) == (await doctor.inner_text("#join-link")).strip()
        await _shot(doctor, "invitation-zh-CN")
        await doctor.goto(f"{base}/console/opinions/{opinion_id}")
        assert "专家会诊意见书" in await doctor.inner_text("h1")
        await _shot(doctor, "opinion-zh-CN")


async def _staff_join(ctx: Any, console: Any, base: str, cid: str) -> Any:
    """The console's Join opens the call in a new tab, as a staff member (no waiting room)."""
    await console.goto(f"{base}/console/consultations/{cid}")
    async with ctx.expect_page() as opened:
        await console.click("#join-btn")
    call = await opened.value
    await call.wait_for_load_state()
    await call.click("#join-btn")
    await wait_for(call, "window.teleconsult.state.phase === 'call'", 20)
    return call


async def _decoding(pages: list[Any], others: int, timeout_s: float = 40) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        stats = [await page.evaluate(STATS_JS) for page in pages]
        if all(media_ok(s, others) for s in stats):
            return
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.5)


async def _quality_shown(page: Any, base: str, cid: str, timeout_s: float = 30) -> set[str]:
    """The roles in the page's call quality table, once the doctor's and the expert's show."""
    deadline = time.monotonic() + timeout_s
    while True:
        await page.goto(f"{base}/console/consultations/{cid}")
        roles = set(
            await page.evaluate(
                "[...document.querySelectorAll('#quality [data-role]')].map(e => e.dataset.role)"
            )
        )
        if {"doctor", "expert"} <= roles:
            return roles
        assert time.monotonic() < deadline, roles
        await asyncio.sleep(1)


def _audit_actions(server: RunningServer) -> list[str]:
    path = server.data_dir / "audit.log"
    return [json.loads(line)["action"] for line in path.read_bytes().splitlines() if line]


async def _latest_invitation(page: Any, base: str, cid: str) -> str:
    await page.goto(f"{base}/console/consultations/{cid}")
    found = await page.get_attribute("[data-print-invitation]", "data-print-invitation")
    assert found
    return str(found)
