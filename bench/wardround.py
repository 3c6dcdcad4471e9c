"""A ward round with observers at scale: one bedside publisher (video and audio) and the
attending, then 1 → 100 observers (students) joining one Worker.

    tests/isolated.sh .venv/bin/python -m bench.wardround [--steps 1,10,25,50,100]

The server runs in its own process (``python -m bench.server``, the room cap lifted); the
bedside and the attending run here, the observers in ``--procs`` child processes
(bench/observers.py), since a hundred receiving bots need more than one Python core. For
each N: every observer's join time (WebSocket → first video frame), then over a steady
window the server's CPU, the bots' CPU (this process and the children), the fraction of the
bedside's video frames sent in the window that reached every observer (matched by their
bytes), their latency, and the audio frames received per observer per second.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.forwarding import parse_steps
from bench.harness import (
    REPO,
    SendLog,
    ServerProcess,
    bot_alive,
    clip_info,
    close_bots,
    latency_summary,
    loopback_only,
    machine_info,
    percentile,
    wait_quiet,
    write_json,
)
from bench.procstat import (
    cpu_percent,
    cpu_sample,
    machine_sample,
    others_percent,
    udp_counters,
    udp_delta,
)
from media.clips import Clip, opus_clip, vp8_clip
from rooms.consultation import ConsultationKind, new_consultation_id
from rooms.roles import Role
from signaling.bot import Bot

log = logging.getLogger("bench")

DEFAULT_STEPS = (1, 10, 25, 50, 100)
WARD = ConsultationKind.ward_round


class Child:
    """One ``python -m bench.observers`` process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.count = 0

    @classmethod
    async def start(cls) -> Child:
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.observers", cwd=REPO, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=64 * 2**20,
        )  # fmt: skip
        return cls(proc)

    async def ask(self, command: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("an observer process died")
        return dict(json.loads(line))

    async def stop(self) -> None:
        with _suppress():
            await self.ask({"op": "quit"}, timeout=1.0)
        with _suppress():
            await asyncio.wait_for(self.proc.wait(), 30)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def _suppress() -> Any:
    import contextlib

    return contextlib.suppress(Exception)


async def ward_round(
    clip: Clip,
    audio: Clip,
    *,
    steps: tuple[int, ...],
    window_s: float,
    settle_s: float,
    workdir: Path,
    procs: int = 2,
    quiet_wait_s: float = 30.0,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Never raises for a bad bot: a broken run is reported in ``error``."""
    server = ServerProcess("forward", workdir, room_cap=max(steps) + 4)
    await server.start()
    sendlog = SendLog()
    consultation = new_consultation_id()

    def token(role: Role, name: str) -> str:
        return server.token(consultation, role, name, kind=WARD)

    # Each video frame's send times by a hash of its bytes: the clip loops, so the same
    # bytes go out again every 10 s; an arrival belongs to the latest send before it.
    sends: dict[str, list[float]] = {}

    def on_sent(data: bytes, at: float) -> None:
        if len(data) > 400:  # video only: Opus packets are ~80 bytes, VP8 frames KBs
            sendlog.on_sent(data, at)
            sends.setdefault(hashlib.sha1(data).hexdigest()[:16], []).append(at)

    def sent_before(digest: str, arrival: float) -> float | None:
        times = sends.get(digest, ())
        return max((t for t in times if t <= arrival), default=None)

    bedside = Bot(
        server.base_url, token(Role.nurse, "Bedside"), video=clip, audio=audio, on_sent=on_sent
    )
    attending = Bot(server.base_url, token(Role.doctor, "Attending"), audio=audio)
    children: list[Child] = []
    rows: list[dict[str, Any]] = []
    joins: list[float] = []
    failed = 0
    result: dict[str, Any] = {"rows": rows, "procs": procs}
    try:
        await bedside.connect()
        if not await bedside.wait_for(
            lambda: bedside.tracks["video"].frames_sent >= 30, timeout=15
        ):
            raise RuntimeError("the bedside never started sending")
        await attending.connect()
        children = [await Child.start() for _ in range(procs)]
        observers = 0
        for n in steps:
            if deadline is not None and time.monotonic() > deadline:
                log.warning("ward round: time bound reached before N=%d", n)
                break
            while observers < n:
                child = min(children, key=lambda c: c.count)
                child.count += 1
                answer = await child.ask(
                    {"op": "join", "url": server.base_url,
                     "token": token(Role.observer, f"Student {observers}")}
                )  # fmt: skip
                observers += 1
                if answer["ok"] and answer["join_s"] is not None:
                    joins.append(float(answer["join_s"]))
                else:
                    failed += 1
            await asyncio.sleep(settle_s)
            quiet = await wait_quiet(server, max_wait_s=quiet_wait_s)
            # The children's frames of before the window are dropped with this report.
            for child in children:
                await child.ask({"op": "frames", "t0": 0, "t1": time.monotonic()})
            pids = [os.getpid(), *(c.proc.pid for c in children)]
            machine0 = machine_sample()
            server0, bots0, udp0 = server.cpu(), [cpu_sample(p) for p in pids], udp_counters()
            await asyncio.sleep(window_s)
            server1, bots1, udp1 = server.cpu(), [cpu_sample(p) for p in pids], udp_counters()
            machine1 = machine_sample()
            others = others_percent(
                machine0, machine1, (server0, server1), *zip(bots0, bots1, strict=True)
            )
            await asyncio.sleep(1.0)  # the frames of the window's last instants land
            t0, t1 = server0.wall, server1.wall
            sent = sendlog.count(t0, t1)
            got, latencies, audio_frames, alive = 0, [], 0, 0
            for child in children:
                report = await child.ask({"op": "frames", "t0": t0, "t1": t1 + 1.0})
                alive += int(report["alive"])
                audio_frames += int(report["audio"])
                for digest, arrival in report["video"]:
                    sent_at = sent_before(digest, arrival)
                    if sent_at is not None and t0 <= sent_at <= t1:
                        got += 1
                        latencies.append(arrival - sent_at)
            cpu = cpu_percent(server0, server1)
            bots_cpu = sum(cpu_percent(a, b) for a, b in zip(bots0, bots1, strict=True))
            health = await server.health()
            row = {
                "observers": n,
                "observers_alive": alive,
                # The bedside's own session, and the video frames it sent in the window.
                "bedside_alive": bot_alive(bedside),
                "bedside_frames_sent": sent,
                "server_cpu_pct": round(cpu, 2),
                "server_cpu_pct_per_observer": round(cpu / n, 3),
                "delivered_pct": round(100 * got / (sent * n), 2) if sent else None,
                "latency": latency_summary(latencies) if latencies else None,
                "audio_frames_per_observer_per_s": round(audio_frames / n / window_s, 1),
                "server_rss_mb": round(server.rss() / 2**20, 1),
                "bots_cpu_pct": round(bots_cpu, 1),
                "udp": udp_delta(udp0, udp1),
                "others_cpu_pct_before": quiet,
                # Every other process on the machine during the window (other people's tests).
                "others_cpu_pct": round(others, 1),
                "worker": health.get("worker"),
            }
            rows.append(row)
            log.warning(
                "ward round N=%d cpu=%.1f%% delivered=%s p50=%s bots=%.0f%%",
                n, cpu, row["delivered_pct"], (row["latency"] or {}).get("p50_ms"), bots_cpu,
            )  # fmt: skip
    except Exception as exc:  # a broken run is reported, not a crash of the whole bench
        log.exception("ward round failed")
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for child in children:
            await child.stop()
        await close_bots([bedside, attending])
        await server.stop()
    result["join"] = {
        "count": len(joins),
        "failed": failed,
        "p50_ms": _ms(percentile(joins, 50)),
        "p95_ms": _ms(percentile(joins, 95)),
        "max_ms": _ms(max(joins) if joins else None),
    }
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def print_ward_round(result: dict[str, Any]) -> None:
    print(f"\n{'N':>4} {'cpu%':>7} {'cpu%/obs':>8} {'deliv%':>7} {'p50ms':>7} {'p95ms':>7} "
          f"{'audio/s':>7} {'rssMB':>6} {'bots%':>6}")  # fmt: skip
    for row in result["rows"]:
        lat = row["latency"] or {}
        print(
            f"{row['observers']:>4} {row['server_cpu_pct']:>7.1f} "
            f"{row['server_cpu_pct_per_observer']:>8.2f} {row['delivered_pct']!s:>7} "
            f"{lat.get('p50_ms')!s:>7} {lat.get('p95_ms')!s:>7} "
            f"{row['audio_frames_per_observer_per_s']:>7} {row['server_rss_mb']:>6.0f} "
            f"{row['bots_cpu_pct']:>6.0f}"
        )
    print(f"join → first video frame: {result['join']} {result.get('error', '')}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wardround", description=__doc__)
    parser.add_argument("--steps", type=parse_steps, default=DEFAULT_STEPS)
    parser.add_argument("--procs", type=int, default=2, help="observer processes")
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--quiet-wait", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    loopback_only()
    started = time.monotonic()
    clip, audio = vp8_clip(seconds=10), opus_clip(seconds=10)
    with tempfile.TemporaryDirectory(prefix="tc-bench-") as tmp:
        result = asyncio.run(
            ward_round(
                clip, audio, steps=args.steps, window_s=args.window, settle_s=args.settle,
                workdir=Path(tmp), procs=args.procs, quiet_wait_s=args.quiet_wait,
            )
        )  # fmt: skip
    data = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python -m bench.wardround " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "clip": clip_info(clip),
        "window_s": args.window,
        "elapsed_s": round(time.monotonic() - started, 1),
        "ward_round": result,
    }
    print_ward_round(result)
    out = args.out or REPO / "bench" / "results" / (
        f"wardround-{datetime.date.today().isoformat()}.json"
    )
    write_json(out, data)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
