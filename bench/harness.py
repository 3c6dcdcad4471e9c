"""What every scenario shares: a server in its own process, tokens, bots and frame clocks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.procstat import (
    CpuSample,
    MachineSample,
    cpu_sample,
    machine_sample,
    others_percent,
    rss_bytes,
    thread_count,
    udp_counters,
)
from media.clips import Clip
from media.config import IceAddress
from media.ice import restrict_host_addresses
from rooms.consultation import ConsultationKind
from rooms.roles import Role
from signaling.bot import Bot
from signaling.tokens import mint

REPO = Path(__file__).resolve().parent.parent


def loopback_only() -> None:
    """Bots gather ICE candidates on 127.0.0.1 only (aioice skips loopback by default)."""
    restrict_host_addresses((IceAddress("127.0.0.1"),))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def terminate(proc: subprocess.Popen[bytes] | None, grace_s: float = 10.0) -> None:
    """SIGTERM, wait (bounded) without blocking the loop, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    deadline = time.monotonic() + grace_s
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=5)


class ServerProcess:
    """``python -m bench.server`` in a child process, measured from /proc."""

    def __init__(self, mode: str, workdir: Path, *, room_cap: int = 0) -> None:
        self.mode = mode
        self.room_cap = room_cap
        self.secret = secrets.token_bytes(32)
        self.port = free_port()
        self.data_dir = workdir / f"server-{mode}-{self.port}"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / "server.log"
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ, TELECONSULT_BENCH_SECRET=self.secret.hex())
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        with self.log_path.open("wb") as log:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.server",
                    "--mode",
                    self.mode,
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    "--room-cap",
                    str(self.room_cap),
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def start(self, timeout: float = 30.0) -> None:
        self.proc = self._spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bench server exited: see {self.log_path}")
            with contextlib.suppress(OSError, aiohttp.ClientError, asyncio.TimeoutError):
                await self.health()
                return
            await asyncio.sleep(0.1)
        await self.stop()
        raise RuntimeError(f"bench server not ready in {timeout} s: see {self.log_path}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def health(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(self.base_url + "/healthz") as response,
        ):
            return dict(await response.json())

    def cpu(self) -> CpuSample:
        return cpu_sample(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def threads(self) -> int:
        return thread_count(self.pid)

    def token(
        self,
        consultation_id: str,
        role: Role,
        name: str = "Bench Bot",
        *,
        kind: ConsultationKind = ConsultationKind.joint,
    ) -> str:
        return mint(
            self.secret,
            consultation_id=consultation_id,
            kind=kind,
            identity="bench-" + secrets.token_hex(6),
            name=name,
            role=role,
            waiting_room=False,
            ttl_s=3600,
        )

    async def stop(self) -> None:
        await terminate(self.proc)


class SendLog:
    """When a publisher handed each frame's bytes to aiortc (the bots share one clock)."""

    def __init__(self) -> None:
        self.sent_at: dict[bytes, float] = {}
        self.times: list[float] = []

    def on_sent(self, data: bytes, at: float) -> None:
        self.sent_at[data] = at
        self.times.append(at)

    def count(self, t0: float, t1: float) -> int:
        return sum(1 for t in self.times if t0 <= t <= t1)


class Receiver:
    """What one subscriber bot received from one publisher: (send time, arrival) per frame.

    Forwarded frames arrive byte for byte as sent, so their send time is looked up by their
    bytes; a re-encoded frame (the MediaRelay baseline) matches nothing and gets send time -1.
    """

    def __init__(self, log: SendLog, kind: str = "video") -> None:
        self.log = log
        self.kind = kind
        self.arrivals: list[tuple[float, float]] = []

    def on_frame(self, kind: str, participant_id: str | None, data: bytes, now: float) -> None:
        if kind != self.kind:
            return
        self.arrivals.append((self.log.sent_at.get(data, -1.0), now))


@dataclass
class Window:
    """A steady measurement window: CPU of the server and of the bots, wall time."""

    server0: CpuSample
    bots0: CpuSample
    udp0: dict[str, int] = field(default_factory=udp_counters)
    machine0: MachineSample = field(default_factory=machine_sample)
    server1: CpuSample | None = None
    bots1: CpuSample | None = None
    udp1: dict[str, int] = field(default_factory=dict)
    machine1: MachineSample | None = None

    @classmethod
    def open(cls, server: ServerProcess) -> Window:
        return cls(server.cpu(), cpu_sample(os.getpid()))

    def close(self, server: ServerProcess) -> None:
        self.server1 = server.cpu()
        self.bots1 = cpu_sample(os.getpid())
        self.udp1 = udp_counters()
        self.machine1 = machine_sample()

    @property
    def others_cpu_pct(self) -> float:
        """What every other process on the machine used meanwhile (other people's tests)."""
        assert self.server1 is not None and self.bots1 is not None and self.machine1
        return round(
            others_percent(
                self.machine0, self.machine1, (self.server0, self.server1), (self.bots0, self.bots1)
            ),
            1,
        )

    @property
    def t0(self) -> float:
        return self.server0.wall

    @property
    def t1(self) -> float:
        assert self.server1 is not None
        return self.server1.wall


async def wait_quiet(server: Any, limit_pct: float = 25.0, max_wait_s: float = 30.0) -> float:
    """Wait (bounded) until other processes use under ``limit_pct`` of a core; returns theirs.

    The machine may be shared (other engineers' browser tests): a window measured while
    something else hogs the cores starves the server and the bots alike.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        m0, s0, b0 = machine_sample(), server.cpu(), cpu_sample(os.getpid())
        await asyncio.sleep(1.0)
        m1, s1, b1 = machine_sample(), server.cpu(), cpu_sample(os.getpid())
        others = others_percent(m0, m1, (s0, s1), (b0, b1))
        if others < limit_pct or time.monotonic() > deadline:
            return round(others, 1)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def delivery(
    log: SendLog, receivers: list[Receiver], t0: float, t1: float
) -> tuple[float | None, list[float]]:
    """Fraction of the frames sent in [t0, t1] that reached each receiver, and latencies (s)."""
    sent = log.count(t0, t1)
    if sent == 0 or not receivers:
        return None, []
    got = 0
    latencies: list[float] = []
    for receiver in receivers:
        matched = [(s, a) for s, a in receiver.arrivals if t0 <= s <= t1]
        if matched:
            got += len(matched)
            latencies += [a - s for s, a in matched]
        else:
            # Nothing matched by bytes (re-encoded): count arrivals in the window instead.
            got += sum(1 for s, a in receiver.arrivals if s < 0 and t0 <= a <= t1)
    return got / (sent * len(receivers)), latencies


@dataclass
class JoinTimes:
    """Join (opening the WebSocket) to first received video frame, per subscriber."""

    seconds: list[float] = field(default_factory=list)
    first_was_keyframe: int = 0
    failed: int = 0
    no_video: int = 0

    def add(self, bot: Bot, started: float) -> None:
        firsts = [
            i for i in bot.inbound.values() if i.kind == "video" and i.first_frame_at is not None
        ]
        if not firsts:
            self.no_video += 1
            return
        first = min(firsts, key=lambda i: i.first_frame_at or 0.0)
        assert first.first_frame_at is not None
        self.seconds.append(first.first_frame_at - started)
        self.first_was_keyframe += bool(first.first_frame_was_keyframe)

    def summary(self) -> dict[str, Any]:
        return {
            "count": len(self.seconds),
            "p50_ms": _ms(percentile(self.seconds, 50)),
            "p95_ms": _ms(percentile(self.seconds, 95)),
            "max_ms": _ms(max(self.seconds) if self.seconds else None),
            "first_frame_keyframe": self.first_was_keyframe,
            "failed": self.failed,
            "no_video": self.no_video,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def latency_summary(latencies: list[float]) -> dict[str, float | None]:
    return {
        "p50_ms": _ms(percentile(latencies, 50)),
        "p95_ms": _ms(percentile(latencies, 95)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "max_ms": _ms(max(latencies) if latencies else None),
    }


async def join_and_wait_video(bot: Bot, joins: JoinTimes, timeout: float = 10.0) -> bool:
    """Connect ``bot`` and wait (bounded) for its first video frame; record the join time."""
    started = time.monotonic()
    try:
        await bot.connect(timeout=timeout)
    except (ConnectionError, OSError, TimeoutError, aiohttp.ClientError):
        joins.failed += 1
        return False
    ok = await bot.wait_for(
        lambda: any(i.kind == "video" and i.frames for i in bot.inbound.values()), timeout
    )
    joins.add(bot, started)
    return ok


async def close_bots(bots: list[Bot], timeout: float = 30.0) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(b.close() for b in bots), return_exceptions=True)


def bot_alive(bot: Bot) -> bool:
    return bot.joined is not None and bot.close_code is None and bot.bye is None


def clip_info(clip: Clip) -> dict[str, Any]:
    total = sum(len(f) for f in clip.frames)
    return {
        "kind": clip.kind,
        "width": clip.width,
        "height": clip.height,
        "frames": len(clip.frames),
        "seconds": round(clip.duration_s, 2),
        "kbps": round(total * 8 / clip.duration_s / 1000, 1),
    }


def machine_info() -> dict[str, Any]:
    import platform

    import aiortc

    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiortc": aiortc.__version__,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
