"""The waiting room in the browser: a patient waits with their preview and a connection
check, and no media connection at all; the doctor sees them and lets them in; then both
decode each other. Screenshots: test-artifacts/waiting-{patient,host}-{en,zh-CN}.png."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.helpers import (
    ARTIFACTS,
    STATS_JS,
    RunningServer,
    chromium,
    media_ok,
    needs_chromium,
    needs_loopback_namespace,
    wait_for,
)

TEXT = {
    "en": {"heading": "Please wait", "next": "You are next.", "admit": "Admit"},
    "zh-CN": {"heading": "请稍候", "next": "下一位就是您。", "admit": "准许进入"},
}


@needs_chromium
@needs_loopback_namespace
@pytest.mark.browser
@pytest.mark.parametrize("lang", ["en", "zh-CN"])
async def test_a_patient_waits_then_the_doctor_lets_them_in(
    server: RunningServer, lang: str
) -> None:
    consultation = f"e2e-waiting-{lang}"
    text = TEXT[lang]
    doctor_url = server.invite("doctor", "Dr. Li 李医生", consultation)
    patient_url = server.invite("patient", "Zhang Ayi 张阿姨", consultation, waits=True)
    ARTIFACTS.mkdir(exist_ok=True)
    async with chromium() as ctx:
        patient = await ctx.new_page()
        await patient.goto(f"{patient_url}?autojoin=1&lang={lang}")
        await wait_for(patient, "window.teleconsult.state.phase === 'waiting'", 20.0)
        assert await patient.text_content("#waiting-view h1") == text["heading"]
        assert await patient.text_content("#waiting-place") == text["next"]
        await wait_for(patient, "window.teleconsult.state.rttMs !== null", 10.0)

        doctor = await ctx.new_page()
        await doctor.goto(f"{doctor_url}?autojoin=1&lang={lang}")
        await wait_for(doctor, "window.teleconsult.state.phase === 'call'", 20.0)
        await doctor.wait_for_selector("#waiting-panel:not([hidden])", timeout=10_000)
        assert "Zhang Ayi 张阿姨" in await doctor.text_content("#waiting-list")

        # While the doctor is in the call with a camera, nothing reaches the patient: it has
        # no RTCPeerConnection at all, so getStats() has nothing to report.
        await asyncio.sleep(2.0)
        assert await patient.evaluate(STATS_JS) is None
        assert await patient.evaluate("window.teleconsult.pc") is None
        await patient.screenshot(path=str(ARTIFACTS / f"waiting-patient-{lang}.png"))
        await doctor.screenshot(path=str(ARTIFACTS / f"waiting-host-{lang}.png"))

        admit = doctor.locator("#waiting-list .admit-btn")
        assert await admit.text_content() == text["admit"]
        await admit.click()
        await wait_for(patient, "window.teleconsult.state.phase === 'call'", 10.0)
        await doctor.wait_for_selector("#waiting-panel[hidden]", state="attached", timeout=5_000)
        deadline = asyncio.get_running_loop().time() + 40
        while True:
            stats = [await page.evaluate(STATS_JS) for page in (patient, doctor)]
            if all(media_ok(s, 1) for s in stats):
                break
            assert asyncio.get_running_loop().time() < deadline, stats
            await asyncio.sleep(1.0)
