"""Two Chromium pages on two signaling nodes (two ``serve --redis`` processes on one Redis)
in one consultation: one node owns the Room, the other relays its page's signaling there,
and each page decodes the other's video and shows the other's name."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RedisServer
from tests.e2e.helpers import (
    ARTIFACTS,
    REPO,
    STATS_JS,
    chromium,
    media_ok,
    needs_chromium,
    needs_loopback_namespace,
    wait_for,
)
from tests.integration.multinode import start_cluster


def _invite(base: str, data_dir: Path, role: str, name: str, consultation: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "signaling.cli", "invite", "--consultation", consultation,
         "--role", role, "--name", name, "--base-url", base, "--data-dir", str(data_dir),
         "--no-waiting-room"],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


@needs_chromium
@needs_loopback_namespace
@pytest.mark.browser
async def test_two_pages_on_two_nodes_decode_each_other(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    cluster = await start_cluster(tmp_path, redis_server.url)
    try:
        a, b = cluster.nodes
        consultation = "e2e-two-nodes-1"
        urls = [
            _invite(a.url, a.data_dir, "doctor", "Dr. Li 李医生", consultation),
            _invite(b.url, b.data_dir, "patient", "Zhang Ayi 张阿姨", consultation),
        ]
        assert urls[0].startswith(a.url) and urls[1].startswith(b.url)
        async with chromium(locale="zh-CN") as ctx:
            pages = []
            for url in urls:
                page = await ctx.new_page()
                await page.goto(f"{url}?autojoin=1")
                pages.append(page)
                # One after the other: the first page's node owns the Room.
                await wait_for(
                    page, "window.teleconsult && window.teleconsult.state.phase === 'call'", 30
                )
            deadline = asyncio.get_running_loop().time() + 40
            while True:
                stats = [await page.evaluate(STATS_JS) for page in pages]
                if all(media_ok(s, 1) for s in stats):
                    break
                assert asyncio.get_running_loop().time() < deadline, stats
                await asyncio.sleep(0.5)
            assert all(s["phase"] == "call" and s["participants"] >= 1 for s in stats)
            captions = [
                await page.locator("#grid .tile-caption").all_inner_texts() for page in pages
            ]
            assert any("张阿姨" in c for c in captions[0]), captions[0]
            assert any("李医生" in c for c in captions[1]), captions[1]
            # One Room, on the node the first page joined through.
            assert await cluster.owner(consultation) is a
            ARTIFACTS.mkdir(exist_ok=True)
            for name, page in zip(("doctor-node-a", "patient-node-b"), pages, strict=True):
                await page.screenshot(path=str(ARTIFACTS / f"two-nodes-{name}.png"))
    finally:
        await cluster.close()
