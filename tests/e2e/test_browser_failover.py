"""A media Worker process dies under two Chromium pages: they reconnect their media by
themselves (media_reset, a new RTCPeerConnection) and decode each other again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from media.registry import Registry
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
from tests.integration.server_process import free_port, start_server, stop_server, wait_healthy


def _invite(base: str, data_dir: Path, role: str, name: str, consultation: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "signaling.cli", "invite", "--consultation", consultation,
         "--role", role, "--name", name, "--base-url", base, "--data-dir", str(data_dir),
         "--no-waiting-room"],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


async def _decoding(pages: list, timeout_s: float) -> list:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        stats = [await page.evaluate(STATS_JS) for page in pages]
        if all(media_ok(s, 1) for s in stats):
            return stats
        assert asyncio.get_running_loop().time() < deadline, stats
        await asyncio.sleep(0.5)


@needs_chromium
@needs_loopback_namespace
@pytest.mark.browser
async def test_pages_get_their_media_back_after_a_worker_dies(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    redis = aioredis.Redis.from_url(redis_server.url)
    await redis.flushdb()
    registry = Registry(redis)
    data_dir, port = tmp_path / "data", free_port()
    server = start_server(port, data_dir, "--redis", redis_server.url, "--workers", "2")
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(base, server)
        async with asyncio.timeout(30):
            while len(await registry.live_workers()) < 2:
                await asyncio.sleep(0.2)
        consultation = "e2e-failover-1"
        urls = [
            _invite(base, data_dir, "doctor", "Dr. Li 李医生", consultation),
            _invite(base, data_dir, "patient", "Zhang Ayi 张阿姨", consultation),
        ]
        async with chromium() as ctx:
            pages = []
            for url in urls:
                page = await ctx.new_page()
                await page.goto(f"{url}?autojoin=1")
                pages.append(page)
            await _decoding(pages, 40)
            first_pcs = [await page.evaluate("window.teleconsult.pc !== null") for page in pages]
            assert all(first_pcs)
            await pages[0].evaluate("window.__before = window.teleconsult.pc")

            holder = await registry.placement(consultation)
            pid = await registry.pid(holder or "")
            assert pid is not None
            os.kill(pid, signal.SIGKILL)

            # A new connection, and media decoded on it, without anyone clicking anything.
            await wait_for(pages[0], "window.teleconsult.pc !== window.__before", 15.0)
            stats = await _decoding(pages, 20)
            assert all(s["phase"] == "call" for s in stats)
            assert await registry.placement(consultation) not in (None, holder)
            ARTIFACTS.mkdir(exist_ok=True)
            await pages[0].screenshot(path=str(ARTIFACTS / "failover-after.png"))
    finally:
        stop_server(server)
        await redis.flushdb()
        await redis.aclose()
