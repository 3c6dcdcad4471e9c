"""The host's controls in the browser: remove a participant, end the consultation for all.

Checked on the server's side too: the removed person's link no longer opens the room, and
only the doctor sees the buttons (the server refuses anyone else anyway, see
tests/integration/test_revocation.py). Screenshots: test-artifacts/host-*-{en,zh-CN}.png.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.e2e.helpers import (
    ARTIFACTS,
    RunningServer,
    chromium,
    needs_chromium,
    needs_loopback_namespace,
    wait_for,
)

TEXT = {
    "en": {
        "remove": "Remove",
        "removed": "You were removed from the consultation.",
        "ended": "The doctor has ended the consultation.",
        "confirm": "End the consultation for everyone?",
    },
    "zh-CN": {
        "remove": "移出",
        "removed": "您已被移出会诊。",
        "ended": "医生已结束本次会诊。",
        "confirm": "要为所有人结束本次会诊吗？",
    },
}


async def _open(ctx: Any, url: str, lang: str) -> Any:
    page = await ctx.new_page()
    await page.goto(f"{url}?autojoin=1&lang={lang}")
    await wait_for(page, "window.teleconsult.state.phase === 'call'", 20.0)
    return page


@needs_chromium
@needs_loopback_namespace
@pytest.mark.browser
@pytest.mark.parametrize("lang", ["en", "zh-CN"])
async def test_the_doctor_removes_one_then_ends_for_all(server: RunningServer, lang: str) -> None:
    consultation = f"e2e-host-{lang}"
    text = TEXT[lang]
    urls = {
        "doctor": server.invite("doctor", "Dr. Li 李医生", consultation),
        "expert": server.invite("expert", "Prof. Wang 王专家", consultation),
        "patient": server.invite("patient", "Zhang Ayi 张阿姨", consultation),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    async with chromium() as ctx:
        pages = {role: await _open(ctx, url, lang) for role, url in urls.items()}
        doctor = pages["doctor"]
        await wait_for(doctor, "document.querySelectorAll('#grid .tile').length === 3", 20.0)
        patient_id = await pages["patient"].evaluate("window.teleconsult.state.self.id")

        # Only the doctor is offered the buttons.
        assert await doctor.locator("#end-all-btn").is_visible()
        remove = doctor.locator(f'.tile[data-participant-id="{patient_id}"] .tile-remove')
        assert await remove.is_visible() and await remove.text_content() == text["remove"]
        for role in ("expert", "patient"):
            assert not await pages[role].locator("#end-all-btn").is_visible(), role
            assert await pages[role].locator(".tile-remove:visible").count() == 0, role

        await remove.click()
        await doctor.wait_for_selector("#confirm-dialog[open]", timeout=5_000)
        await doctor.screenshot(path=str(ARTIFACTS / f"host-remove-confirm-{lang}.png"))
        await doctor.click("#confirm-yes")

        patient = pages["patient"]
        await patient.wait_for_selector("#end-view:not([hidden])", timeout=10_000)
        assert await patient.text_content("#end-message") == text["removed"]
        assert not await patient.locator("#rejoin-btn").is_visible()  # the link is dead
        await patient.screenshot(path=str(ARTIFACTS / f"host-removed-{lang}.png"))
        await wait_for(doctor, "document.querySelectorAll('#grid .tile').length === 2", 10.0)

        # The same link opened again: refused, with its own page.
        again = await ctx.new_page()
        response = await again.goto(f"{urls['patient']}?lang={lang}")
        assert response is not None and response.status == 401

        await doctor.click("#end-all-btn")
        await doctor.wait_for_selector("#confirm-dialog[open]", timeout=5_000)
        assert await doctor.text_content("#confirm-title") == text["confirm"]
        await doctor.screenshot(path=str(ARTIFACTS / f"host-end-confirm-{lang}.png"))
        await doctor.click("#confirm-yes")
        expert = pages["expert"]
        await expert.wait_for_selector("#end-view:not([hidden])", timeout=10_000)
        assert await expert.text_content("#end-message") == text["ended"]
        await doctor.wait_for_selector("#end-view:not([hidden])", timeout=10_000)
        await asyncio.sleep(0.2)
        await expert.screenshot(path=str(ARTIFACTS / f"host-ended-{lang}.png"))
