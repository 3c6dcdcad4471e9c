"""Firefox in the call: Debian's firefox-esr and Chromium through the real server.

Firefox starts slowly (a few seconds each), so two tests only: the core call between the two
browsers, each decoding the other's video, and a consultation forwarding H.264, which this
Firefox cannot use (no OpenH264 plugin offline), where it goes on with audio and a notice
while Chromium is unharmed. Screenshots land in test-artifacts/firefox-*.png.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import serve
from tests.e2e.firefox import FirefoxPage, firefox, needs_firefox
from tests.e2e.helpers import (
    ARTIFACTS,
    MEDIA_TIMEOUT_S,
    OUTBOUND_JS,
    STATS_JS,
    RunningServer,
    chromium,
    media_ok,
    needs_chromium,
    needs_loopback_namespace,
    wait_for,
    watch_console,
)

pytestmark = [needs_chromium, needs_firefox, needs_loopback_namespace, pytest.mark.browser]

CODECS_JS = """() => ({
  send: (RTCRtpSender.getCapabilities("video")?.codecs ?? []).map((c) => c.mimeType),
  recv: (RTCRtpReceiver.getCapabilities("video")?.codecs ?? []).map((c) => c.mimeType),
})"""
NOTICE_JS = "() => !document.getElementById('media-notice').hidden"


@pytest.fixture(scope="module")
def h264_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from serve(tmp_path_factory, "--video-codec", "H264")


def _video(stats: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [s for s in (stats or {}).get("inbound", []) if s["kind"] == "video"]


def _audio_packets(stats: dict[str, Any] | None) -> int:
    return sum(
        s["packetsReceived"] for s in (stats or {}).get("inbound", []) if s["kind"] == "audio"
    )


async def _until(
    pages: dict[str, Any], ok: Any, server: RunningServer, console: dict[str, list[str]]
) -> dict[str, Any]:
    """Poll every page's stats until ``ok(stats)``; fail with the evidence."""
    deadline = time.monotonic() + MEDIA_TIMEOUT_S
    stats: dict[str, Any] = {}
    while True:
        for name, page in pages.items():
            stats[name] = await page.evaluate(STATS_JS)
        if ok(stats):
            return stats
        if time.monotonic() > deadline:
            pytest.fail(
                f"not within {MEDIA_TIMEOUT_S}s\nstats: {json.dumps(stats, indent=1)}\n"
                f"console: {json.dumps(console, indent=1, ensure_ascii=False)}\n"
                f"server log:\n{server.log_tail()}"
            )
        await asyncio.sleep(1.0)


async def _screenshots(chrome: Any, fox: FirefoxPage, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await chrome.screenshot(path=str(ARTIFACTS / f"firefox-{name}-chromium.png"))
    await fox.screenshot(ARTIFACTS / f"firefox-{name}-firefox.png")


async def test_chromium_and_firefox_decode_each_others_video(server: RunningServer) -> None:
    consultation = "e2e-firefox-call"
    doctor_url = server.invite("doctor", "Dr. Li 李医生", consultation)
    patient_url = server.invite("patient", "Zhang Ayi 张阿姨", consultation)
    console: dict[str, list[str]] = {"chromium": []}
    async with chromium() as ctx, firefox(server.base_url) as fox:
        chrome = await ctx.new_page()
        watch_console(chrome, console["chromium"])
        await chrome.goto(f"{doctor_url}?autojoin=1")
        await fox.goto(f"{patient_url}?autojoin=1")
        pages = {"chromium": chrome, "firefox": fox}
        try:
            first = await _until(
                pages, lambda s: all(media_ok(s[n], 1) for n in s), server, console
            )
            # Still decoding a moment later: frames keep coming, at the camera's size.
            await asyncio.sleep(2.0)
            later = await _until(pages, lambda s: True, server, console)
            for name in pages:
                before, after = _video(first[name])[0], _video(later[name])[0]
                assert after["framesDecoded"] > before["framesDecoded"] + 20, (name, later)
                assert after["frameWidth"] >= 320, (name, later)
                assert later[name]["connection"] == "connected", (name, later)
            captions = " ".join(await chrome.locator("#grid .tile-caption").all_inner_texts())
            assert "Zhang Ayi 张阿姨" in captions, captions
            fox_captions = await fox.evaluate(
                "() => [...document.querySelectorAll('#grid .tile-caption')]"
                ".map((e) => e.textContent).join(' ')"
            )
            assert "Dr. Li 李医生" in fox_captions, fox_captions
        finally:
            await _screenshots(chrome, fox, "call")


async def test_firefox_without_h264_gets_audio_and_the_notice(h264_server: RunningServer) -> None:
    """Chromium joins first and the consultation forwards H.264; Firefox, which cannot
    decode it here, is offered H.264 video and rejects it (or says it cannot), and goes on
    with audio and the notice. Chromium's call is unharmed."""
    server = h264_server
    consultation = "e2e-firefox-h264"
    doctor_url = server.invite("doctor", "Dr. Li", consultation)
    patient_url = server.invite("patient", "Zhang Ayi", consultation)
    console: dict[str, list[str]] = {"chromium": []}
    async with chromium() as ctx:
        chrome = await ctx.new_page()
        watch_console(chrome, console["chromium"])
        chrome_codecs = await chrome.evaluate(CODECS_JS)
        if not all("video/H264" in chrome_codecs[d] for d in ("send", "recv")):
            pytest.skip(f"this Chromium cannot send and receive H.264: {chrome_codecs}")
        await chrome.goto(f"{doctor_url}?autojoin=1")
        await wait_for(
            chrome, "window.teleconsult && window.teleconsult.state.phase === 'call'", 15
        )
        async with firefox(server.base_url) as fox:
            await fox.goto(f"{patient_url}?autojoin=1")
            pages = {"chromium": chrome, "firefox": fox}
            try:
                stats = await _until(
                    pages,
                    lambda s: all(_audio_packets(s[n]) > 50 for n in s),
                    server,
                    console,
                )
                fox_codecs = await fox.evaluate(CODECS_JS)
                # Firefox lists H.264 or not (it depends on the OpenH264 plugin, absent
                # offline); either way it ends up without video, told so.
                print(f"Firefox's video codecs: {fox_codecs}")
                await wait_for(fox, NOTICE_JS, 10)
                assert not [v for v in _video(stats["firefox"]) if v["framesDecoded"] > 0]
                assert stats["firefox"]["connection"] == "connected", stats
                assert await fox.evaluate("() => window.teleconsult.state.phase") == "call"
                # Chromium: connected, hearing Firefox, no error shown, no notice of its own.
                assert stats["chromium"]["connection"] == "connected", stats
                assert await chrome.locator(".toast-error").count() == 0, console
                assert not await chrome.evaluate(NOTICE_JS)
                # The consultation does forward H.264: what Chromium sends.
                outbound = await chrome.evaluate(OUTBOUND_JS)
                sent = {
                    o["mimeType"] for o in outbound if o["kind"] == "video" and o["packetsSent"]
                }
                assert sent == {"video/H264"}, outbound
                assert await chrome.evaluate("window.teleconsult.state.phase") == "call"
            finally:
                await _screenshots(chrome, fox, "h264")
