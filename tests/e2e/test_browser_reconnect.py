"""The reconnect ladder in the browser: the signaling socket drops mid-call and the page gets
the same session back (resumed, its media never stopped, nobody told it left)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.e2e.helpers import (
    STATS_JS,
    RunningServer,
    chromium,
    media_ok,
    needs_chromium,
    needs_loopback_namespace,
    wait_for,
)


async def _decoded(page) -> int:  # type: ignore[no-untyped-def]
    stats = await page.evaluate(STATS_JS)
    return sum(i["framesDecoded"] for i in (stats or {}).get("inbound", []) if i["kind"] == "video")


async def _both_decoding(pages, timeout_s: float = 40) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        stats = [await page.evaluate(STATS_JS) for page in pages]
        if all(media_ok(s, 1) for s in stats):
            return
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.5)


@needs_chromium
@needs_loopback_namespace
@pytest.mark.browser
async def test_a_dropped_signaling_socket_resumes_the_same_session(
    server: RunningServer,
) -> None:
    consultation = "e2e-reconnect-1"
    urls = [
        server.invite("doctor", "Dr. Li", consultation),
        server.invite("patient", "Zhang Ayi", consultation),
    ]
    async with chromium() as ctx:
        pages = []
        for url in urls:
            page = await ctx.new_page()
            await page.goto(f"{url}?autojoin=1")
            pages.append(page)
        await _both_decoding(pages)
        patient, doctor = pages[1], pages[0]
        me = await patient.evaluate("window.teleconsult.state.self.id")
        await patient.evaluate("window.__pc = window.teleconsult.pc")

        # The signaling socket drops: the page resumes the same session, same connection.
        before = await _decoded(patient)
        await patient.evaluate("window.teleconsult.dropSignaling()")
        await wait_for(patient, "window.teleconsult.state.resumes === 1", 15.0)
        assert await patient.evaluate("window.teleconsult.state.phase") == "call"
        assert await patient.evaluate("window.teleconsult.pc === window.__pc")
        assert await patient.evaluate("window.teleconsult.state.self.id") == me
        await wait_for(doctor, f"!!window.teleconsult.participants['{me}']", 2.0)
        assert await _decoded(patient) > before  # pictures never stopped
        assert not await patient.locator("#end-view:not([hidden])").count()


@needs_chromium
@needs_loopback_namespace
@pytest.mark.browser
async def test_a_new_session_after_a_lost_one_keeps_the_microphone_muted(
    server: RunningServer,
) -> None:
    """When the session cannot be resumed the page joins again (a new participant id) and
    tells the server what it had muted: the others see it muted and hear nothing."""
    consultation = "e2e-reconnect-2"
    urls = [
        server.invite("doctor", "Dr. Li", consultation),
        server.invite("patient", "Zhang Ayi", consultation),
    ]
    async with chromium() as ctx:
        pages = []
        for url in urls:
            page = await ctx.new_page()
            await page.goto(f"{url}?autojoin=1")
            pages.append(page)
        await _both_decoding(pages)
        doctor, patient = pages
        await patient.click("#mic-btn")
        first = await patient.evaluate("window.teleconsult.state.self.id")
        await wait_for(doctor, f"window.teleconsult.participants['{first}']?.audioMuted", 5.0)

        # The session cannot come back (as after the grace period): a new one is made.
        await patient.evaluate("window.teleconsult.state.resumeToken = 'gone'")
        await patient.evaluate("window.teleconsult.dropSignaling()")
        await wait_for(patient, f"window.teleconsult.state.self?.id !== '{first}'", 15.0)
        second = await patient.evaluate("window.teleconsult.state.self.id")
        await wait_for(doctor, f"window.teleconsult.participants['{second}']?.audioMuted", 5.0)
        assert await patient.evaluate("window.teleconsult.state.micMuted")
