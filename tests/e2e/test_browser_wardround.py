"""A remote ward round in headless Chromium against a real ``teleconsult serve``: the attending
sets up three beds with the form on the consultation's console page, a bedside page (a
nurse) and two remote experts join. The agenda advances on every page; an expert without the
floor cannot be heard (the others' getStats() shows no inbound audio packets from them)
while the bedside is; the expert raises a hand, the attending gives the floor from the hand
queue and the expert is heard by everyone; taking the floor back silences them again.
Screenshots of the agenda on the console page, the attending's and an expert's page in en
and zh-CN land in test-artifacts/wardround-*.png."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from tests.e2e.helpers import (
    ARTIFACTS,
    MEDIA_TIMEOUT_S,
    REPO,
    STATS_JS,
    RunningServer,
    chromium,
    needs_chromium,
    needs_loopback_namespace,
    wait_for,
)

pytestmark = [pytest.mark.browser, needs_chromium, needs_loopback_namespace]

PASSWORD = "a long enough password"
TIMEOUT = 20.0
IN_CALL = "window.teleconsult.state.phase === 'call' && window.teleconsult.pc !== null"
NOTE = "术后第2天，引流 80 ml"

# Inbound audio packets on this page from one participant (by the offer's slots), or null.
AUDIO_FROM_JS = """
async (pid) => {
  const tc = window.teleconsult;
  if (!tc || !tc.pc) return null;
  const slot = tc.state.slots.find(
    (s) => s.kind === "audio" && s.role === "consume" && s.participantId === pid);
  if (!slot) return null;
  const report = await tc.pc.getStats();
  let packets = null;
  report.forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "audio" && r.mid === slot.mid) {
      packets = r.packetsReceived ?? 0;
    }
  });
  return packets;
}
"""

API_JS = """
async ([method, path, body]) => {
  const csrf = document.querySelector("input[name=csrf]").value;
  const resp = await fetch("/api/frontdesk" + path, {
    method, headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: body === null ? undefined : JSON.stringify(body)});
  return [resp.status, await resp.json()];
}
"""


def _cli(server: RunningServer, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "signaling.cli", *args, "--data-dir", str(server.data_dir)],
        cwd=REPO, input=stdin, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def _invite(server: RunningServer, consultation: str, role: str, name: str) -> str:
    out = _cli(
        server, "invite", "--consultation", consultation, "--kind", "ward_round",
        "--role", role, "--name", name, "--base-url", server.base_url, "--no-waiting-room",
    )  # fmt: skip
    return out.splitlines()[-1]


async def _audio_from(page: Any, pid: str) -> int | None:
    return await page.evaluate(AUDIO_FROM_JS, pid)


async def _silent(pages: list[Any], pid: str) -> None:
    """No audio packets from ``pid`` reach any of ``pages`` over 2 s."""
    await asyncio.sleep(0.5)  # what was in flight lands
    before = [await _audio_from(p, pid) for p in pages]
    await asyncio.sleep(2.0)
    after = [await _audio_from(p, pid) for p in pages]
    assert after == before, (before, after)


async def _heard(pages: list[Any], pid: str) -> None:
    """Audio packets from ``pid`` keep arriving at every one of ``pages``."""
    before = [(await _audio_from(p, pid)) or 0 for p in pages]
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while True:
        now = [(await _audio_from(p, pid)) or 0 for p in pages]
        if all(n > b + 25 for n, b in zip(now, before, strict=True)):
            return
        if asyncio.get_running_loop().time() > deadline:
            stats = [await p.evaluate(STATS_JS) for p in pages]
            slots = [await p.evaluate("window.teleconsult.state.slots") for p in pages]
            pytest.fail(f"{pid} not heard: {before} -> {now}\n{stats}\n{slots}")
        await asyncio.sleep(0.5)


def _label(page_expr: str) -> str:
    return f"window.teleconsult.ward.agenda?.current?.label === {json.dumps(page_expr)}"


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
async def test_a_ward_round_with_floor_control(server: RunningServer, lang: str) -> None:
    site = _cli(server, "sites", "add", "--kind", "township_health_centre", "--name", "Ward 3")
    username = f"dr-att-{lang.lower()}"
    _cli(
        server, "staff", "add", "--username", username, "--name", "Dr. Wang 王主任",
        "--role", "doctor", "--site", site, "--password-stdin", stdin=PASSWORD + "\n",
    )  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    async with chromium(locale="zh-CN" if lang == "zh-CN" else "en-US") as ctx:
        desk = await ctx.new_page()
        await desk.goto(f"{server.base_url}/login")
        await desk.fill("#username", username)
        await desk.fill("#password", PASSWORD)
        async with desk.expect_navigation():
            await desk.click("#login-btn")
        status, c = await desk.evaluate(
            API_JS, ["POST", "/consultations", {"kind": "ward_round", "minutes": 60}]
        )
        assert status == 201, c
        cid = c["id"]
        # The beds are set up on the consultation's console page; a wrong one taken off.
        await desk.goto(f"{server.base_url}/console/consultations/{cid}?lang={lang}")
        for label in ("3-12", "3-13", "3-14", "3-15"):
            await desk.fill("#add-bed-form input[name=label]", label)
            await desk.fill("#add-bed-form input[name=note]", NOTE)
            async with desk.expect_navigation():
                await desk.click("#add-bed-btn")
        wrong = desk.locator(".ward-bed", has_text="3-13")
        async with desk.expect_navigation():
            await wrong.locator("[data-remove-bed]").click()
        labels = await desk.locator(".ward-bed-label").all_text_contents()
        assert labels == ["3-12", "3-14", "3-15"]
        assert await desk.locator(".ward-bed-note").all_text_contents() == [NOTE] * 3
        await desk.locator("#ward-summary").screenshot(
            path=str(ARTIFACTS / f"wardround-agenda-{lang}.png")
        )
        await desk.close()

        urls = {
            "attending": _invite(server, cid, "doctor", "Dr. Wang 王主任"),
            "bedside": _invite(server, cid, "nurse", "Nurse Li 李护士"),
            "expert_a": _invite(server, cid, "expert", "Dr. Zhang 张专家"),
            "expert_b": _invite(server, cid, "expert", "Dr. Chen 陈专家"),
        }
        pages: dict[str, Any] = {}
        for role, url in urls.items():
            pages[role] = page = await ctx.new_page()
            await page.goto(f"{url}?autojoin=1&lang={lang}")
            await wait_for(page, IN_CALL, MEDIA_TIMEOUT_S)
        for page in pages.values():
            await wait_for(page, "Object.keys(window.teleconsult.participants).length === 4", 20)
            await wait_for(page, "window.teleconsult.ward.agenda?.total === 3", TIMEOUT)
        ids = {
            role: await page.evaluate("window.teleconsult.state.self.id")
            for role, page in pages.items()
        }
        attending, bedside = pages["attending"], pages["bedside"]
        expert_a, expert_b = pages["expert_a"], pages["expert_b"]

        # The agenda advances for all.
        await attending.click("#ward-next-btn")
        for page in pages.values():
            await wait_for(page, _label("3-12"), TIMEOUT)
            text = await page.locator("#ward-current").text_content()
            assert text and "3-12" in text
            assert "3-14" in (await page.locator("#ward-next").text_content() or "")
        assert await expert_a.locator("#ward-note").text_content() == NOTE
        # The bedside is shown large on every page.
        for page in pages.values():
            spot = (
                "document.querySelector('.grid.ward-spotlight .tile-bedside')"
                "?.dataset.participantId"
            )
            await wait_for(page, f"{spot} === '{ids['bedside']}'", TIMEOUT)

        # The bedside is heard by the experts; an expert without the floor by nobody.
        await _heard([expert_a, expert_b], ids["bedside"])
        assert await expert_a.locator("#ward-held").is_visible()
        await _silent([attending, bedside, expert_b], ids["expert_a"])

        # A hand goes up; the attending sees it in the queue.
        await expert_a.click("#ward-hand-btn")
        await wait_for(
            attending, "document.querySelectorAll('#ward-hands .ward-give').length === 1", TIMEOUT
        )
        await attending.wait_for_timeout(300)
        await attending.screenshot(path=str(ARTIFACTS / f"wardround-attending-{lang}.png"))
        await expert_a.screenshot(path=str(ARTIFACTS / f"wardround-expert-held-{lang}.png"))

        # The floor given: heard by everyone.
        await attending.click("#ward-hands .ward-give")
        await _heard([attending, bedside, expert_b], ids["expert_a"])
        await wait_for(expert_a, "!window.teleconsult.ward.floor.held.includes("
                       f"'{ids['expert_a']}')", TIMEOUT)  # fmt: skip
        assert not await expert_a.locator("#ward-held").is_visible()
        # With the floor the bedside camera's buttons appear; this bedside's fake camera
        # cannot zoom, so the server refuses with a typed error the page shows.
        assert await expert_a.locator("#ward-camera").is_visible()
        assert not await expert_b.locator("#ward-camera").is_visible()
        await expert_a.click("#ward-camera [data-axis=zoom][data-step='1']")
        unsupported = {
            "en": "The bedside camera cannot move that way.",
            "zh-CN": "床旁摄像头不支持这样调整。",
        }[lang]
        await wait_for(
            expert_a,
            f"document.querySelector('#toasts').textContent.includes({json.dumps(unsupported)})",
            TIMEOUT,
        )
        await expert_b.wait_for_timeout(300)
        await expert_b.screenshot(path=str(ARTIFACTS / f"wardround-expert-{lang}.png"))

        # Taken back: silent again; the round goes on to the next bed for all.
        await attending.click("#ward-take-btn")
        await wait_for(attending, "window.teleconsult.ward.floor.holder == null", TIMEOUT)
        await _silent([attending, bedside, expert_b], ids["expert_a"])
        await attending.click("#ward-next-btn")
        for page in pages.values():
            await wait_for(page, _label("3-14"), TIMEOUT)
