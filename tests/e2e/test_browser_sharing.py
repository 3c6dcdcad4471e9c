"""Chat and shared images between two real pages in headless Chromium, against the real
server: chat reaches both as text and survives a reload; a photo and a DICOM image shared by
the doctor appear in both viewers (the DICOM with its windows), the patient switches the
window, the doctor's pointer moves on the patient's page. Screenshots of the viewer (with a
DICOM window) and the chat, in English and Simplified Chinese."""

from __future__ import annotations

import pytest

from tests import dicom_files
from tests.clinic_images import jpeg_with_gps
from tests.e2e.helpers import (
    ARTIFACTS,
    MEDIA_TIMEOUT_S,
    RunningServer,
    chromium,
    needs_chromium,
    needs_loopback_namespace,
    wait_for,
)

TIMEOUT = 20.0
IN_CALL = "window.teleconsult.state.phase === 'call' && window.teleconsult.pc !== null"


def _viewer(expr: str) -> str:
    return f"window.teleconsult.viewer.{expr}"


async def _say(page, text: str) -> None:  # type: ignore[no-untyped-def]
    if not await page.locator("#chat-panel").is_visible():
        await page.click("#chat-btn")
    await page.fill("#chat-input", text)
    await page.click("#chat-send")


async def _chat_texts(page) -> list[str]:  # type: ignore[no-untyped-def]
    return await page.evaluate(
        "[...document.querySelectorAll('#chat-list .chat-text')].map((e) => e.textContent)"
    )


@needs_chromium
@needs_loopback_namespace
@pytest.mark.browser
@pytest.mark.parametrize("lang", ["en", "zh-CN"])
async def test_chat_and_shared_images_reach_every_page(server: RunningServer, lang: str) -> None:
    consultation = f"e2e-sharing-{lang.lower()}"
    doctor_url = server.invite("doctor", "Dr. Li", consultation)
    patient_url = server.invite("patient", "Zhang Ayi 张阿姨", consultation)
    ARTIFACTS.mkdir(exist_ok=True)
    async with chromium(locale="zh-CN" if lang == "zh-CN" else "en-US") as ctx:
        doctor, patient = await ctx.new_page(), await ctx.new_page()
        for page, url in ((doctor, doctor_url), (patient, patient_url)):
            await page.goto(f"{url}?autojoin=1&lang={lang}")
        for page in (doctor, patient):
            await wait_for(page, IN_CALL, MEDIA_TIMEOUT_S)
        await wait_for(doctor, "Object.keys(window.teleconsult.participants).length === 2", 20)

        # ---- chat: to both pages, as text, kept across a reload
        hostile = "<b>bold</b><img src=x onerror=window.__pwned=1> 请明天上午复诊"
        await _say(doctor, hostile)
        await _say(patient, "好的，谢谢医生 — thank you")
        for page in (doctor, patient):
            await wait_for(
                page, "document.querySelectorAll('#chat-list .chat-text').length === 2", TIMEOUT
            )
            assert await _chat_texts(page) == [hostile, "好的，谢谢医生 — thank you"]
            assert (
                await page.evaluate("document.querySelector('#chat-list b, #chat-list img')")
                is None
            )
            assert await page.evaluate("window.__pwned") is None

        await patient.reload()
        await wait_for(patient, IN_CALL, MEDIA_TIMEOUT_S)
        await wait_for(patient, "window.teleconsult.chat.messages.size === 2", TIMEOUT)
        await patient.click("#chat-btn")
        assert await _chat_texts(patient) == [hostile, "好的，谢谢医生 — thank you"]
        await wait_for(doctor, "Object.keys(window.teleconsult.participants).length === 2", 20)

        # ---- a photo, shared by the doctor, in both viewers
        await doctor.set_input_files(
            "#share-file",
            files=[
                {"name": "wound.jpg", "mimeType": "image/jpeg", "buffer": jpeg_with_gps(320, 200)}
            ],
        )
        for page in (doctor, patient):
            await wait_for(
                page, _viewer("kind === 'photo' && window.teleconsult.viewer.loaded >= 1"), TIMEOUT
            )
            await wait_for(
                page, "document.querySelector('#viewer-img').naturalWidth === 320", TIMEOUT
            )
            assert await page.locator("#viewer-dialog").is_visible()

        # ---- then a DICOM image: its windows, each page's own switcher
        await doctor.set_input_files(
            "#share-file",
            files=[
                {
                    "name": "chest.dcm",
                    "mimeType": "application/dicom",
                    "buffer": dicom_files.ct_phantom(256),
                }
            ],
        )
        for page in (doctor, patient):
            await wait_for(page, _viewer("kind === 'dicom'"), TIMEOUT)
            await wait_for(
                page, "document.querySelector('#viewer-img').naturalWidth === 256", TIMEOUT
            )
            assert await page.locator("#viewer-preset").is_visible()
            options = await page.evaluate(
                "[...document.querySelectorAll('#viewer-preset option')].map((o) => o.value)"
            )
            assert options == ["soft_tissue", "lung", "bone", "file"]
            info = await page.locator("#viewer-info").text_content()
            assert info and "CT" in info and "CHEST" in info
            page_text = await page.evaluate("document.body.innerText")
            assert "Wang" not in page_text and "88412" not in page_text
        loaded = await patient.evaluate(_viewer("loaded"))
        await patient.select_option("#viewer-preset", "lung")
        await wait_for(
            patient,
            _viewer(f"preset === 'lung' && window.teleconsult.viewer.loaded > {loaded}"),
            TIMEOUT,
        )
        # The patient's window is the patient's own: the doctor still sees soft tissue.
        assert await doctor.evaluate(_viewer("preset")) == "soft_tissue"

        # ---- the doctor's pointer moves on the patient's page
        box = await doctor.locator("#viewer-stage").bounding_box()
        assert box is not None
        img = await doctor.locator("#viewer-img").bounding_box()
        assert img is not None
        await doctor.mouse.move(img["x"] + img["width"] * 0.3, img["y"] + img["height"] * 0.6)
        await doctor.mouse.move(
            img["x"] + img["width"] * 0.25, img["y"] + img["height"] * 0.5, steps=5
        )
        await wait_for(patient, _viewer("pointer !== null"), TIMEOUT)
        await wait_for(
            patient,
            "Math.abs(window.teleconsult.viewer.pointer.x - 0.25) < 0.03 && "
            "Math.abs(window.teleconsult.viewer.pointer.y - 0.5) < 0.03",
            TIMEOUT,
        )
        assert await patient.locator("#viewer-pointer").is_visible()
        # The patient cannot move it: nothing of theirs reaches the doctor.
        pbox = await patient.locator("#viewer-img").bounding_box()
        assert pbox is not None
        await patient.mouse.move(pbox["x"] + 10, pbox["y"] + 10)
        await patient.mouse.move(pbox["x"] + 30, pbox["y"] + 30, steps=3)
        await doctor.wait_for_timeout(500)
        assert abs(await doctor.evaluate(_viewer("pointer.x")) - 0.25) < 0.03

        # ---- screenshots: the viewer with a DICOM window, and the chat
        if await patient.locator("#chat-panel").is_visible():
            await patient.click("#chat-close")
        await patient.wait_for_timeout(300)  # the viewer fits the wider stage
        assert not await patient.locator("#viewer-stop").is_visible()  # the doctor's to close
        await patient.screenshot(path=str(ARTIFACTS / f"sharing-viewer-dicom-{lang}.png"))
        await doctor.click("#viewer-close")
        if not await doctor.locator("#chat-panel").is_visible():
            await doctor.click("#chat-btn")
        await doctor.screenshot(path=str(ARTIFACTS / f"sharing-chat-{lang}.png"))

        # ---- the doctor stops showing: the patient's viewer closes
        await doctor.click("#share-btn")  # the closed viewer opens again
        await doctor.click("#viewer-stop")
        await wait_for(patient, _viewer("imageId === null"), TIMEOUT)
        assert not await patient.locator("#viewer-dialog").is_visible()
