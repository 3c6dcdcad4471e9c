"""The browser client end to end: the join page's HTTP behaviour, and a real three-party call
between headless Chromium tabs through the real server.

Run inside a loopback-only network namespace (TESTING.md), from the repo root:

    unshare -n sh -c 'ip link set lo up; exec .venv/bin/pytest tests/e2e -q -x'

The Chromium tests skip themselves when another interface is up, so that no test traffic
can leave loopback. Screenshots land in test-artifacts/browser-call-<role>.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from signaling import appkeys, tokens
from signaling.config import ServerConfig
from signaling.pages import setup_pages

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# Exactly the flags TESTING.md prescribes.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream=fps=30",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]
SECRET = b"s" * 32
CONSULTATION = "e2e-browser-call"
HEALTH_TIMEOUT_S = 20.0
MEDIA_TIMEOUT_S = 40.0
EVIL_NAME = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


def _interfaces() -> set[str]:
    # /proc/net follows the caller's network namespace (/sys/class/net does not).
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return {line.split(":", 1)[0].strip() for line in lines}


def _loopback_only() -> bool:
    return _interfaces() <= {"lo"}


needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian chromium is not installed"
)
needs_loopback_namespace = pytest.mark.skipif(
    not _loopback_only(),
    reason="Chromium tests run only in a loopback-only network namespace: "
    "unshare -n sh -c 'ip link set lo up; exec .venv/bin/pytest tests/e2e'",
)


# ------------------------------------------------------------------ the pages alone


def _minimal_app(data_dir: Path) -> web.Application:
    app = web.Application()
    app[appkeys.CONFIG] = ServerConfig(data_dir=data_dir, secret=SECRET)
    setup_pages(app)
    return app


def _token(name: str = "Dr. Li", role: str = "doctor", **kw: Any) -> str:
    return tokens.mint(
        SECRET,
        consultation_id=CONSULTATION,
        kind="joint",
        identity="u-test",
        name=name,
        role=role,
        **kw,
    )


@pytest.fixture
async def pages_client(tmp_path: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    client = TestClient(TestServer(_minimal_app(tmp_path), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


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
    token = _token(ttl_s=60, now=time.time() - 3600)
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
    token = _token(name=EVIL_NAME, role="patient")
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
    token = _token(role="observer")
    resp = await pages_client.get(f"/join/{token}", headers={"Accept-Language": "en-US,en"})
    body = await resp.text()
    assert 'lang="en"' in body and "Observer" in body and "Join" in body
    assert 'id="preview"' not in body  # observers publish nothing, so no preview


async def test_static_files_are_served(pages_client: TestClient) -> None:
    for path in ("app.js", "signaling.js", "call.js", "ui.js", "style.css"):
        resp = await pages_client.get(f"/static/{path}")
        assert resp.status == 200, path
    resp = await pages_client.get("/static/../i18n.py")
    assert resp.status in (403, 404)


# ------------------------------------------------------------------ Chromium helpers


async def _wait_for(page: Any, expression: str, timeout_s: float) -> None:
    """Poll ``expression`` until truthy. (Playwright's wait_for_function evaluates strings with
    ``new Function`` inside the page, which the page's CSP rightly forbids.)"""
    deadline = time.monotonic() + timeout_s
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s}s: {expression}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="tc-chromium-") as profile:
        async with async_playwright() as pw:
            ctx = await pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 720},
                locale="en-US",
            )
            try:
                yield ctx
            finally:
                await ctx.close()


@needs_chromium
@needs_loopback_namespace
@pytest.mark.browser
async def test_name_does_not_execute_in_browser(pages_client: TestClient) -> None:
    token = _token(name=EVIL_NAME, role="patient")
    url = str(pages_client.make_url(f"/join/{token}"))
    async with _chromium() as ctx:
        page = await ctx.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: dialogs.append(d.message))
        await page.goto(url)
        await _wait_for(page, "document.body.dataset.view === 'join-view'", 10.0)
        assert await page.evaluate("window.__pwned") is None
        assert await page.text_content("#join-name") == EVIL_NAME
        assert await page.evaluate("document.querySelectorAll('img').length") == 0
        assert dialogs == []


# ------------------------------------------------------------------ the real server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    base_url: str
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def invite(self, role: str, name: str, consultation: str = CONSULTATION) -> str:
        out = subprocess.run(
            [
                sys.executable, "-m", "signaling.cli", "invite",
                "--consultation", consultation, "--kind", "joint",
                "--role", role, "--name", name,
                "--base-url", self.base_url, "--data-dir", str(self.data_dir),
            ],
            cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        url = out.stdout.strip().splitlines()[-1]
        assert url.startswith(f"{self.base_url}/join/"), url
        return url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    if importlib.util.find_spec("signaling.app") is None:
        pytest.skip("signaling/app.py has not landed yet")
    data_dir = tmp_path_factory.mktemp("server-data")
    port = _free_port()
    log = data_dir / "server.log"
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TELECONSULT_SECRET", None)
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "signaling.cli", "serve",
                "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
            ],
            cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    running = RunningServer(base, data_dir, log, proc)
    try:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{running.log_tail()}")
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no /healthz within {HEALTH_TIMEOUT_S}s:\n{running.log_tail()}")
            time.sleep(0.2)
        yield running
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_real_server_serves_the_error_page(server: RunningServer) -> None:
    try:
        urllib.request.urlopen(f"{server.base_url}/join/garbage", timeout=5)
    except urllib.error.HTTPError as e:
        assert e.code == 401
        assert b"invitation link" in e.read()
    else:
        pytest.fail("a garbage token was accepted")


STATS_JS = """
async () => {
  const tc = window.teleconsult;
  if (!tc || !tc.pc) return null;
  const report = await tc.pc.getStats();
  const inbound = [];
  report.forEach((r) => {
    if (r.type === "inbound-rtp") {
      inbound.push({kind: r.kind, mid: r.mid ?? null, framesDecoded: r.framesDecoded ?? 0,
                    frameWidth: r.frameWidth ?? 0, packetsReceived: r.packetsReceived ?? 0});
    }
  });
  return {connection: tc.pc.connectionState, phase: tc.state.phase,
          participants: Object.keys(tc.participants).length, inbound};
}
"""


def _media_ok(stats: dict[str, Any] | None) -> bool:
    if not stats:
        return False
    video = [
        s for s in stats["inbound"]
        if s["kind"] == "video" and s["framesDecoded"] > 60 and s["frameWidth"] >= 320
    ]  # fmt: skip
    audio = [s for s in stats["inbound"] if s["kind"] == "audio" and s["packetsReceived"] > 0]
    return len(video) >= 2 and len(audio) >= 2


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

    async with _chromium() as ctx:
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
                if all(_media_ok(stats[role]) for role in pages):
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
                await _wait_for(
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
    async with _chromium() as ctx:
        observer = await ctx.new_page()
        observer.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        await observer.goto(f"{observer_url}?autojoin=1")
        await _wait_for(observer, "window.teleconsult.state.phase === 'call'", 10.0)
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
