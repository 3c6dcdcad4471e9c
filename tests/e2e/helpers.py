"""Shared pieces of the browser tests: Chromium with the prescribed flags, the real server in
its own process, polling a page, WebRTC stats, and a moving test clip for the fake camera.

The ``server`` fixture itself lives in conftest.py; everything else is imported from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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
CONSULTATION = "e2e-browser-call"
# The signing secret of the pages-only app (the ``pages_client`` fixture).
PAGES_SECRET = b"e2e-pages-Zq7vK2pW9xR4mT8bN1cY6hJ3d"
HEALTH_TIMEOUT_S = 20.0
MEDIA_TIMEOUT_S = 40.0


def _interfaces() -> set[str]:
    # /proc/net follows the caller's network namespace (/sys/class/net does not).
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return {line.split(":", 1)[0].strip() for line in lines}


def loopback_only() -> bool:
    return _interfaces() <= {"lo"}


needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian chromium is not installed"
)
needs_loopback_namespace = pytest.mark.skipif(
    not loopback_only(),
    reason="Chromium tests run only in a loopback-only network namespace: "
    "tests/isolated.sh .venv/bin/pytest tests/e2e",
)


async def wait_for(page: Any, expression: str, timeout_s: float, interval_s: float = 0.1) -> Any:
    """Poll ``expression`` until truthy and return its value. (Playwright's wait_for_function
    evaluates strings with ``new Function`` inside the page, which the page's CSP rightly
    forbids.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s}s: {expression}")
        await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def chromium(
    extra_args: Sequence[str] = (), locale: str = "en-US", executable: str = CHROMIUM
) -> AsyncIterator[Any]:
    """A persistent headless Chromium context (one browser, any number of tabs);
    ``executable`` may be a wrapper that starts it elsewhere (another network namespace)."""
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="tc-chromium-") as profile:
        async with async_playwright() as pw:
            ctx = await pw.chromium.launch_persistent_context(
                profile,
                executable_path=executable,
                headless=True,
                args=[*CHROMIUM_ARGS, *extra_args],
                viewport={"width": 1280, "height": 720},
                locale=locale,
            )
            try:
                yield ctx
            finally:
                await ctx.close()


def pages_token(name: str = "Dr. Li", role: str = "doctor", **kw: Any) -> str:
    """A join token for the pages-only app."""
    from signaling import tokens

    return tokens.mint(
        PAGES_SECRET,
        consultation_id=CONSULTATION,
        kind="joint",
        identity="u-test",
        name=name,
        role=role,
        **kw,
    )


def free_port() -> int:
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

    def invite(
        self, role: str, name: str, consultation: str = CONSULTATION, *, waits: bool = False
    ) -> str:
        """A link from ``teleconsult invite``: pre-admitted unless ``waits`` (the waiting
        room has tests of its own)."""
        out = subprocess.run(
            [
                sys.executable, "-m", "signaling.cli", "invite",
                "--consultation", consultation, "--kind", "joint",
                "--role", role, "--name", name,
                "--base-url", self.base_url, "--data-dir", str(self.data_dir),
                *([] if waits else ["--no-waiting-room"]),
            ],
            cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        url = out.stdout.strip().splitlines()[-1]
        assert url.startswith(f"{self.base_url}/join/"), url
        return url


def token_of(join_url: str) -> str:
    """The join token inside an invite link (``.../join/<token>``)."""
    return join_url.rsplit("/join/", 1)[1].split("?", 1)[0]


# ------------------------------------------------------------------ WebRTC stats

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

# What this page sends: per outbound-rtp, its codec and (video) the encoded picture size.
OUTBOUND_JS = """
async () => {
  const tc = window.teleconsult;
  if (!tc || !tc.pc) return null;
  const report = await tc.pc.getStats();
  const codecs = {};
  report.forEach((r) => { if (r.type === "codec") codecs[r.id] = r; });
  const out = [];
  report.forEach((r) => {
    if (r.type !== "outbound-rtp") return;
    const c = codecs[r.codecId] || {};
    out.push({kind: r.kind, mimeType: c.mimeType ?? null, clockRate: c.clockRate ?? null,
              channels: c.channels ?? null, frameWidth: r.frameWidth ?? null,
              frameHeight: r.frameHeight ?? null, framesEncoded: r.framesEncoded ?? null,
              framesSent: r.framesSent ?? null, keyFramesEncoded: r.keyFramesEncoded ?? null,
              packetsSent: r.packetsSent ?? 0, bytesSent: r.bytesSent ?? 0,
              targetBitrate: r.targetBitrate ?? null, fps: r.framesPerSecond ?? null,
              encoder: r.encoderImplementation ?? null,
              limitation: r.qualityLimitationReason ?? null});
  });
  return out;
}
"""


def media_ok(stats: dict[str, Any] | None, others: int) -> bool:
    """Video decoding and audio arriving from each of ``others`` participants."""
    if not stats:
        return False
    video = [
        s for s in stats["inbound"]
        if s["kind"] == "video" and s["framesDecoded"] > 60 and s["frameWidth"] >= 320
    ]  # fmt: skip
    audio = [s for s in stats["inbound"] if s["kind"] == "audio" and s["packetsReceived"] > 0]
    return len(video) >= others and len(audio) >= others


async def wait_for_media(
    pages: dict[str, Any],
    server: RunningServer,
    console: dict[str, list[str]],
    timeout_s: float = MEDIA_TIMEOUT_S,
) -> dict[str, Any]:
    """Until every page receives and decodes everybody else; fail with the evidence."""
    stats: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        for role, page in pages.items():
            stats[role] = await page.evaluate(STATS_JS)
        if all(media_ok(stats[role], len(pages) - 1) for role in pages):
            return stats
        if time.monotonic() > deadline:
            pytest.fail(
                f"media did not flow within {timeout_s}s\n"
                f"stats: {json.dumps(stats, indent=1)}\n"
                f"console: {json.dumps(console, indent=1, ensure_ascii=False)}\n"
                f"server log:\n{server.log_tail()}"
            )
        await asyncio.sleep(1.0)


def watch_console(page: Any, sink: list[str]) -> None:
    page.on("console", lambda m: sink.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: sink.append(f"pageerror: {e}"))


# ------------------------------------------------------------------ a camera that moves


def write_y4m(path: Path, seconds: float = 3.0, width: int = 640, height: int = 480,
              fps: int = 30, noise: int = 6, seed: int = 7) -> Path:  # fmt: skip
    """A moving, noisy 4:2:0 clip for ``--use-file-for-fake-video-capture`` (Chromium loops
    it): a diagonal gradient that scrolls, a bright square that travels, colour bands that
    drift, and block noise (``noise`` luma levels either way, in 16x16 blocks), so every
    picture has detail and no two frames are the same. Mild on purpose: heavy noise makes
    the browser's encoder fall back to 320x240 at the start-of-call bandwidth estimate."""
    import numpy as np

    rng = np.random.default_rng(seed)
    frames = round(seconds * fps)
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = np.mgrid[0 : height // 2, 0 : width // 2]
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for n in range(frames):
            y = ((xx + yy + 4 * n) % 256).astype(np.int16) // 2 + 48
            side = height // 4
            x0 = (n * 9) % (width - side)
            y0 = (n * 5) % (height - side)
            y[y0 : y0 + side, x0 : x0 + side] = 235
            blocks = rng.integers(-noise, noise + 1, size=(height // 16, width // 16))
            y += np.kron(blocks.astype(np.int16), np.ones((16, 16), dtype=np.int16))
            u = 128 + 60 * np.sin((cx + 3 * n) / 23.0)
            v = 128 + 60 * np.cos((cy - 2 * n) / 17.0)
            f.write(b"FRAME\n")
            f.write(np.clip(y, 16, 235).astype(np.uint8).tobytes())
            f.write(np.clip(u, 16, 240).astype(np.uint8).tobytes())
            f.write(np.clip(v, 16, 240).astype(np.uint8).tobytes())
    return path
