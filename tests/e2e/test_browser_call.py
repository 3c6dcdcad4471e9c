"""The browser client end to end: the join page's HTTP behaviour, and a real three-party call
between headless Chromium tabs through the real server.

Run inside a loopback-only network namespace (TESTING.md), from the repo root:

    tests/isolated.sh .venv/bin/pytest -q tests/e2e

The Chromium tests skip themselves when another interface is up, so that no test traffic
can leave loopback. Screenshots land in test-artifacts/browser-call-<role>.png.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from signaling import tokens
from tests.e2e.helpers import (
    ARTIFACTS,
    CONSULTATION,
    MEDIA_TIMEOUT_S,
    OUTBOUND_JS,
    STATS_JS,
    RunningServer,
    chromium,
    media_ok,
    needs_chromium,
    needs_loopback_namespace,
    pages_token,
    wait_for,
    write_y4m,
)

EVIL_NAME = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


# ------------------------------------------------------------------ the pages alone


def _assert_page_headers(resp: Any) -> None:
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "connect-src 'self' ws: wss:" in csp


@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "x" * 3000, "%3Cscript%3E"])
async def test_garbage_token_is_401_error_page(pages_client: TestClient, garbage: str) -> None:
    resp = await pages_client.get(f"/join/{garbage}", headers={"Accept-Language": "en"})
    assert resp.status == 401
    _assert_page_headers(resp)
    body = await resp.text()
    assert "This invitation link is not valid." in body
    assert garbage not in body and "<script>" not in body
    assert "Traceback" not in body


async def test_expired_token_is_401_error_page(pages_client: TestClient) -> None:
    token = pages_token(ttl_s=60, now=time.time() - 3600)
    resp = await pages_client.get(f"/join/{token}", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert resp.status == 401
    _assert_page_headers(resp)
    body = await resp.text()
    assert "此邀请链接已过期。" in body
    assert token not in body
    assert 'lang="zh-CN"' in body


async def test_wrong_secret_is_401(pages_client: TestClient) -> None:
    token = tokens.mint(
        b"t" * 32, consultation_id=CONSULTATION, kind="joint", identity="u", name="x", role="expert"
    )
    resp = await pages_client.get(f"/join/{token}")
    assert resp.status == 401


async def test_join_page_escapes_the_name(pages_client: TestClient) -> None:
    token = pages_token(name=EVIL_NAME, role="patient")
    resp = await pages_client.get(f"/join/{token}?lang=zh-CN", headers={"Accept-Language": "en"})
    assert resp.status == 200
    _assert_page_headers(resp)
    body = await resp.text()
    assert "<script>window.__pwned" not in body
    assert "<img src=x" not in body
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in body
    # The JSON handed to the script cannot close its <script> block either.
    assert "</script><img" not in body
    assert "患者" in body and "联合会诊" in body  # ?lang beats Accept-Language
    assert token in body  # the script needs it for `join`


async def test_join_page_language_from_accept_language(pages_client: TestClient) -> None:
    token = pages_token(role="observer")
    resp = await pages_client.get(f"/join/{token}", headers={"Accept-Language": "en-US,en"})
    body = await resp.text()
    assert 'lang="en"' in body and "Observer" in body and "Join" in body
    assert 'id="preview"' not in body  # observers publish nothing, so no preview


async def test_kiosk_mode_is_a_body_class(pages_client: TestClient) -> None:
    token = pages_token(role="patient")
    body = await (await pages_client.get(f"/join/{token}?kiosk=1")).text()
    assert '<body class="page-join kiosk">' in body
    assert '"kiosk": true' in body
    body = await (await pages_client.get(f"/join/{token}?autojoin=1")).text()
    assert '<body class="page-join">' in body  # autojoin alone keeps the ordinary layout
    assert '"kiosk": false' in body
    # The consent dialog and its catalogue text are on every join page.
    assert 'id="consent-dialog"' in body and "part of the medical record" in body


async def test_static_files_are_served(pages_client: TestClient) -> None:
    for path in (
        "app.js",
        "signaling.js",
        "call.js",
        "ui.js",
        "recording.js",
        "recordings.js",
        "style.css",
    ):
        resp = await pages_client.get(f"/static/{path}")
        assert resp.status == 200, path
    resp = await pages_client.get("/static/../i18n.py")
    assert resp.status in (403, 404)


@needs_chromium
@needs_loopback_namespace
@pytest.mark.browser
async def test_name_does_not_execute_in_browser(pages_client: TestClient) -> None:
    token = pages_token(name=EVIL_NAME, role="patient")
    url = str(pages_client.make_url(f"/join/{token}"))
    async with chromium() as ctx:
        page = await ctx.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: dialogs.append(d.message))
        await page.goto(url)
        await wait_for(page, "document.body.dataset.view === 'join-view'", 10.0)
        assert await page.evaluate("window.__pwned") is None
        assert await page.text_content("#join-name") == EVIL_NAME
        assert await page.evaluate("document.querySelectorAll('img').length") == 0
        assert dialogs == []


# ------------------------------------------------------------------ the real server


def test_real_server_serves_the_error_page(server: RunningServer) -> None:
    try:
        urllib.request.urlopen(f"{server.base_url}/join/garbage", timeout=5)
    except urllib.error.HTTPError as e:
        assert e.code == 401
        assert b"invitation link" in e.read()
    else:
        pytest.fail("a garbage token was accepted")


@needs_chromium
@needs_loopback_namespace
@pytest.mark.browser
async def test_three_party_call_in_chromium(server: RunningServer) -> None:
    people = [
        ("doctor", "Dr. Li 李医生"),
        ("expert", "Prof. Wang 王专家"),
        ("patient", "Zhang Ayi 张阿姨"),
    ]
    urls = {role: server.invite(role, name) for role, name in people}
    ARTIFACTS.mkdir(exist_ok=True)
    console: dict[str, list[str]] = {role: [] for role in urls}
    stats: dict[str, Any] = {}

    async with chromium() as ctx:
        pages = {}
        for role, url in urls.items():
            page = await ctx.new_page()
            page.on("console", lambda m, r=role: console[r].append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e, r=role: console[r].append(f"pageerror: {e}"))
            await page.goto(f"{url}?autojoin=1")
            pages[role] = page

        deadline = time.monotonic() + MEDIA_TIMEOUT_S
        shot = False
        try:
            while True:
                for role, page in pages.items():
                    stats[role] = await page.evaluate(STATS_JS)
                if all(media_ok(stats[role], 2) for role in pages):
                    break
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"media did not flow within {MEDIA_TIMEOUT_S}s\n"
                        f"stats: {json.dumps(stats, indent=1)}\n"
                        f"console: {json.dumps(console, indent=1, ensure_ascii=False)}\n"
                        f"server log:\n{server.log_tail()}"
                    )
                await asyncio.sleep(1.0)

            # Every page shows three tiles with names and role labels.
            for role, page in pages.items():
                assert await page.locator("#grid .tile").count() == 3, role
                captions = await page.locator("#grid .tile-caption").all_inner_texts()
                text = " ".join(captions)
                for other_role, name in people:
                    assert name in text, (role, name, captions)
                    assert other_role.capitalize() in text, (role, other_role, captions)
                state = await page.get_attribute("#conn-state-text", "data-state")
                assert state == "connected", (role, state)
                assert await page.text_content("#conn-state-text") == "Connection: Connected"
            await _screenshots(pages)
            shot = True

            # Muting the microphone shows on the others' tile of the doctor.
            doctor_id = await pages["doctor"].evaluate("window.teleconsult.state.self.id")
            await pages["doctor"].click("#mic-btn")
            assert await pages["doctor"].text_content("#mic-btn") == "Unmute"
            for role in ("expert", "patient"):
                await pages[role].wait_for_selector(
                    f'.tile.audio-muted[data-participant-id="{doctor_id}"]', timeout=5_000
                )

            # Leaving removes the patient's tile everywhere else.
            await pages["patient"].click("#leave-btn")
            await pages["patient"].wait_for_selector("#end-view:not([hidden])", timeout=5_000)
            for role in ("doctor", "expert"):
                await wait_for(
                    pages[role], "document.querySelectorAll('#grid .tile').length === 2", 10.0
                )
        finally:
            if not shot:
                await _screenshots(pages)


async def _screenshots(pages: dict[str, Any]) -> None:
    for role, page in pages.items():
        await page.bring_to_front()
        await asyncio.sleep(0.5)
        await page.screenshot(path=str(ARTIFACTS / f"browser-call-{role}.png"))


@needs_chromium
@needs_loopback_namespace
@pytest.mark.browser
async def test_observer_alone_first_then_receives(server: RunningServer) -> None:
    """An observer publishes nothing: alone in the room it gets no offer at all (one without
    m-lines is refused by browsers), and then receives the doctor who joins later."""
    consultation = "e2e-observer-first"
    observer_url = server.invite("observer", "Student Chen", consultation)
    doctor_url = server.invite("doctor", "Dr. Li", consultation)
    console: list[str] = []
    async with chromium() as ctx:
        observer = await ctx.new_page()
        observer.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        await observer.goto(f"{observer_url}?autojoin=1")
        await wait_for(observer, "window.teleconsult.state.phase === 'call'", 10.0)
        assert not await observer.evaluate("window.teleconsult.state.offers")
        assert await observer.locator("#mic-btn").count() == 0
        assert await observer.evaluate("window.teleconsult.state.publish") == []

        doctor = await ctx.new_page()
        await doctor.goto(f"{doctor_url}?autojoin=1")
        deadline = time.monotonic() + MEDIA_TIMEOUT_S
        while True:
            stats = await observer.evaluate(STATS_JS)
            inbound = (stats or {}).get("inbound", [])
            video = [s for s in inbound if s["kind"] == "video" and s["framesDecoded"] > 30]
            audio = [s for s in inbound if s["kind"] == "audio" and s["packetsReceived"] > 0]
            if video and audio:
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the observer received nothing: {stats}\n{console}\n{server.log_tail()}"
                )
            await asyncio.sleep(1.0)
        # The observer sends nothing: no outbound RTP at all.
        outbound = await observer.evaluate(
            """async () => { let n = 0; (await window.teleconsult.pc.getStats())
                 .forEach((r) => { if (r.type === "outbound-rtp") n += 1; }); return n; }"""
        )
        assert outbound == 0
        ARTIFACTS.mkdir(exist_ok=True)
        await observer.screenshot(path=str(ARTIFACTS / "browser-call-observer.png"))


@pytest.mark.browser
async def test_publisher_is_not_starved_of_bandwidth(server: RunningServer, tmp_path: Path) -> None:
    """The Worker asks publishers for up to 1.5 Mbps (REMB): a browser sending a camera
    through it must climb to its full picture size, not sit at a fraction of it."""
    consultation = "e2e-bandwidth"
    clip = write_y4m(tmp_path / "camera.y4m", seconds=3.0)
    urls = [server.invite(role, name, consultation) for role, name in
            (("doctor", "Dr. Li"), ("patient", "Zhang Ayi"))]  # fmt: skip
    async with chromium([f"--use-file-for-fake-video-capture={clip}"]) as ctx:
        pages = []
        for url in urls:
            page = await ctx.new_page()
            await page.goto(f"{url}?autojoin=1")
            pages.append(page)
        deadline = time.monotonic() + 45
        best: dict[str, Any] = {}
        while time.monotonic() < deadline:
            out = await pages[0].evaluate(OUTBOUND_JS) or []
            video = [o for o in out if o["kind"] == "video" and o["frameWidth"]]
            if video:
                best = max(video, key=lambda o: o["targetBitrate"] or 0)
                if best["frameWidth"] >= 640 and (best["targetBitrate"] or 0) >= 800_000:
                    break
            await asyncio.sleep(1.0)
        assert best.get("frameWidth", 0) >= 640, best
        assert (best.get("targetBitrate") or 0) >= 800_000, best
