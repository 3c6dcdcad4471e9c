"""A screen share and a second camera between real pages in headless Chromium, against the
real server. The doctor shares the screen (getDisplayMedia: Chromium's fake capture under
``--use-fake-ui-for-media-stream --use-fake-device-for-media-stream``); the patient decodes
it as a second inbound video (getStats) and shows it large. The patient, who may not share
a screen, adds a second camera instead; the doctor decodes it beside the main one. Stopping
the share takes the spotlight down. Screenshots in English and Simplified Chinese."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.helpers import (
    ARTIFACTS,
    MEDIA_TIMEOUT_S,
    STATS_JS,
    RunningServer,
    chromium,
    needs_chromium,
    needs_loopback_namespace,
    wait_for,
)

TIMEOUT = 30.0
IN_CALL = "window.teleconsult.state.phase === 'call' && window.teleconsult.pc !== null"


def _decoded(stats: dict[str, Any] | None, slots: list[dict[str, Any]], source: str) -> int:
    """Frames decoded on the inbound video m-line that carries ``source``."""
    mids = {s["mid"] for s in slots if s["role"] == "consume" and s.get("source") == source}
    return max(
        (
            s["framesDecoded"]
            for s in (stats or {}).get("inbound", [])
            if s["kind"] == "video" and s["mid"] in mids
        ),
        default=0,
    )


async def _frames(page: Any, source: str) -> int:
    stats = await page.evaluate(STATS_JS)
    slots = await page.evaluate("window.teleconsult.state.slots")
    return _decoded(stats, slots, source)


async def _wait_frames(page: Any, source: str, more_than: int, timeout_s: float = TIMEOUT) -> int:
    import asyncio
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        frames = await _frames(page, source)
        if frames > more_than:
            return frames
        if time.monotonic() > deadline:
            raise AssertionError(f"{source}: {frames} frames decoded, wanted > {more_than}")
        await asyncio.sleep(0.3)


@needs_chromium
@needs_loopback_namespace
@pytest.mark.browser
@pytest.mark.parametrize("lang", ["en", "zh-CN"])
async def test_a_shared_screen_is_decoded_and_shown_large_on_the_other_page(
    server: RunningServer, lang: str
) -> None:
    consultation = f"e2e-screenshare-{lang.lower()}"
    doctor_url = server.invite("doctor", "Dr. Li 李医生", consultation)
    patient_url = server.invite("patient", "Zhang Ayi 张阿姨", consultation)
    ARTIFACTS.mkdir(exist_ok=True)
    async with chromium(locale="zh-CN" if lang == "zh-CN" else "en-US") as ctx:
        doctor, patient = await ctx.new_page(), await ctx.new_page()
        for page, url in ((doctor, doctor_url), (patient, patient_url)):
            await page.goto(f"{url}?autojoin=1&lang={lang}")
        for page in (doctor, patient):
            await wait_for(page, IN_CALL, MEDIA_TIMEOUT_S)
        await wait_for(doctor, "Object.keys(window.teleconsult.participants).length === 2", 20)
        await _wait_frames(patient, "camera", 30, MEDIA_TIMEOUT_S)

        # Who may: the doctor sees Share screen; the patient only Add camera.
        assert await doctor.locator("#screen-btn").is_visible()
        assert not await patient.locator("#screen-btn").is_visible()
        assert await patient.locator("#camera2-btn").is_visible()

        await doctor.click("#screen-btn")
        await wait_for(
            doctor, "window.teleconsult.screenShare.publishing.includes('screen')", TIMEOUT
        )
        await wait_for(patient, "window.teleconsult.screenShare.spotlight !== null", TIMEOUT)
        await _wait_frames(patient, "screen", 30)
        # Announced with its source: kept apart from the sender's camera.
        await wait_for(
            patient,
            "(() => { const tc = window.teleconsult;"
            " const p = tc.participants[tc.screenShare.spotlight.participantId];"
            " return p.producers.screen === tc.screenShare.spotlight.producerId"
            " && p.producers.video !== p.producers.screen; })()",
            TIMEOUT,
        )
        # Both videos decode: the camera goes on beside the screen.
        camera = await _frames(patient, "camera")
        await _wait_frames(patient, "camera", camera + 10)
        # Shown large: the spotlight takes most of the stage, with the screen's picture.
        await wait_for(
            patient, "document.getElementById('spotlight-video').videoWidth > 0", TIMEOUT
        )
        box = await patient.locator("#spotlight").bounding_box()
        tile = await patient.locator("#grid .tile").first.bounding_box()
        assert box is not None and tile is not None
        assert box["width"] > 0.5 * 1280 and box["width"] > 2 * tile["width"]
        name = await patient.text_content("#spotlight-name")
        assert name and "李医生" in name
        await patient.screenshot(path=str(ARTIFACTS / f"screenshare-{lang}-patient.png"))

        # The patient adds a second camera (a wound close-up): decoded on the doctor's page,
        # in a tile beside the patient's.
        await patient.click("#camera2-btn")
        await wait_for(
            patient, "window.teleconsult.screenShare.publishing.includes('camera2')", TIMEOUT
        )
        await wait_for(doctor, "window.teleconsult.screenShare.beside.length === 1", TIMEOUT)
        await _wait_frames(doctor, "camera2", 30)
        assert await doctor.locator("#grid .tile-extra video").evaluate("v => v.videoWidth") > 0
        await doctor.screenshot(path=str(ARTIFACTS / f"screenshare-{lang}-doctor.png"))

        # Stopping the share takes the spotlight down everywhere.
        await doctor.click("#screen-btn")
        await wait_for(patient, "window.teleconsult.screenShare.spotlight === null", TIMEOUT)
        assert not await patient.locator("#spotlight").is_visible()
        await patient.click("#camera2-btn")
        await wait_for(doctor, "window.teleconsult.screenShare.beside.length === 0", TIMEOUT)
        assert await doctor.locator("#grid .tile-extra").count() == 0

        # Shared again: the page reuses its idle m-line, and the new share is decoded (an
        # m-line's counter goes on from where its last track left it).
        stats = await patient.evaluate(STATS_JS)
        decoded = {s["mid"]: s["framesDecoded"] for s in stats["inbound"]}
        await doctor.click("#screen-btn")
        await wait_for(patient, "window.teleconsult.screenShare.spotlight !== null", TIMEOUT)
        slots = await patient.evaluate("window.teleconsult.state.slots")
        (mid,) = [x["mid"] for x in slots if x["role"] == "consume" and x.get("source") == "screen"]
        await _wait_frames(patient, "screen", decoded.get(mid, 0) + 30)
