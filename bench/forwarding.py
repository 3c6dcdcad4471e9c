"""One publisher to N subscribers: CPU per forwarded stream, delivery, latency, join time.

    tests/isolated.sh .venv/bin/python -m bench.forwarding [--modes forward,relay]

The server runs in its own process (``python -m bench.server``); the bots run here. For each
N in the steps, subscribers join one at a time a room whose publisher is already sending
(join → first video frame is measured for each), then after a settling pause the server's
CPU (every thread, /proc/<pid>/stat) is measured over a steady window, along with the
fraction of the frames sent in that window that reached every subscriber and each frame's
latency (publisher hands the bytes to aiortc → subscriber has the whole frame).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    REPO,
    JoinTimes,
    Receiver,
    SendLog,
    ServerProcess,
    Window,
    bot_alive,
    clip_info,
    close_bots,
    delivery,
    join_and_wait_video,
    latency_summary,
    loopback_only,
    machine_info,
    wait_quiet,
    write_json,
)
from bench.procstat import cpu_percent, udp_delta
from media.clips import Clip, vp8_clip
from rooms.consultation import new_consultation_id
from rooms.roles import Role
from signaling.bot import Bot

log = logging.getLogger("bench")

DEFAULT_STEPS = (1, 2, 4, 8, 16, 24, 32)


async def fanout(
    mode: str,
    clip: Clip,
    *,
    steps: tuple[int, ...],
    window_s: float,
    settle_s: float,
    workdir: Path,
    quiet_wait_s: float = 30.0,
    stop_below: float = 0.95,
    max_bot_cpu: float = 90.0,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Run the fan-out scenario against one server mode; never raises for a bad bot."""
    # Fan-out past the product's room cap (12) needs it lifted: bench-only, see bench/server.py.
    server = ServerProcess(mode, workdir, room_cap=max(steps) + 1)
    await server.start()
    sendlog = SendLog()
    consultation = new_consultation_id()
    publisher = Bot(
        server.base_url,
        server.token(consultation, Role.doctor, "Publisher"),
        video=clip,
        on_sent=sendlog.on_sent,
    )
    subscribers: list[Bot] = []
    receivers: list[Receiver] = []
    joins = JoinTimes()
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {"mode": mode, "rows": rows}
    try:
        await publisher.connect()
        # The publisher's Producer must be up and sending before anyone subscribes.
        ok = await publisher.wait_for(
            lambda: publisher.tracks["video"].frames_sent >= 30, timeout=15
        )
        if not ok:
            raise RuntimeError("the publisher never started sending")
        await asyncio.sleep(settle_s)
        idle = Window.open(server)
        await asyncio.sleep(min(window_s, 5.0))
        idle.close(server)
        assert idle.server1 is not None
        result["publisher_only_cpu_pct"] = round(cpu_percent(idle.server0, idle.server1), 2)
        result["rss_publisher_only_mb"] = round(server.rss() / 2**20, 1)
        for n in steps:
            if deadline is not None and time.monotonic() > deadline:
                log.warning("%s: time bound reached before N=%d", mode, n)
                break
            while len(subscribers) < n:
                receiver = Receiver(sendlog)
                bot = Bot(
                    server.base_url,
                    server.token(consultation, Role.observer, f"Sub {len(subscribers)}"),
                    on_frame=receiver.on_frame,
                )
                subscribers.append(bot)
                receivers.append(receiver)
                await join_and_wait_video(bot, joins)
            await asyncio.sleep(settle_s)
            quiet = await wait_quiet(server, max_wait_s=quiet_wait_s)
            window = Window.open(server)
            await asyncio.sleep(window_s)
            window.close(server)
            await asyncio.sleep(0.5)  # let the frames of the window's last instants land
            assert window.server1 is not None and window.bots1 is not None
            alive = [b for b in subscribers if bot_alive(b)]
            # Every subscriber counts: one that failed to join or died receives nothing.
            delivered, latencies = delivery(sendlog, receivers, window.t0, window.t1)
            cpu = cpu_percent(window.server0, window.server1)
            bots_cpu = cpu_percent(window.bots0, window.bots1)
            health = await server.health()
            row = {
                "subscribers": n,
                "subscribers_alive": len(alive),
                "joins_failed": joins.failed,
                "server_cpu_pct": round(cpu, 2),
                "server_cpu_pct_per_stream": round(cpu / n, 3),
                "server_cpu_pct_above_publisher_only": round(
                    cpu - result["publisher_only_cpu_pct"], 2
                ),
                "delivered_pct": None if delivered is None else round(100 * delivered, 2),
                "latency": latency_summary(latencies) if latencies else None,
                "server_rss_mb": round(server.rss() / 2**20, 1),
                "server_threads": server.threads(),
                "bots_cpu_pct": round(bots_cpu, 1),
                # UDP datagrams the kernel dropped in the window (full socket buffers)
                "udp": udp_delta(window.udp0, window.udp1),
                "others_cpu_pct_before": quiet,
                "others_cpu_pct": window.others_cpu_pct,
                "worker": health.get("worker"),
                # at most ~1000 per step, evenly spread: enough for the latency plot
                "latency_samples_ms": [
                    round(x * 1000, 2) for x in latencies[:: max(1, len(latencies) // 1000)]
                ],
            }
            rows.append(row)
            log.warning(
                "%s N=%d cpu=%.1f%% delivered=%s p50=%s bots=%.0f%%",
                mode,
                n,
                cpu,
                row["delivered_pct"],
                (row["latency"] or {}).get("p50_ms"),
                bots_cpu,
            )
            if delivered is None or delivered < stop_below:
                result["stopped"] = f"delivery fell below {100 * stop_below:.0f}% at N={n}"
                break
            if bots_cpu > max_bot_cpu:
                result["stopped"] = f"the bots' process saturated ({bots_cpu:.0f}% of a core)"
                break
        result["join"] = joins.summary()
        result["publisher_keyframe_requests"] = publisher.tracks["video"].keyframe_requests
    except Exception as exc:  # a broken run is reported, not a crash of the whole bench
        log.exception("%s: fan-out failed", mode)
        result["error"] = f"{type(exc).__name__}: {exc}"
        result.setdefault("join", joins.summary())
    finally:
        await close_bots([publisher, *subscribers])
        await server.stop()
    result["subscribers_died"] = sum(1 for b in subscribers if b.joined and not bot_alive(b))
    return result


def print_fanout(results: list[dict[str, Any]]) -> None:
    print()
    print(
        f"{'mode':8} {'N':>4} {'cpu%':>7} {'cpu%/str':>8} {'deliv%':>7} "
        f"{'p50ms':>7} {'p95ms':>7} {'p99ms':>7} {'rssMB':>6} {'bots%':>6}"
    )
    for result in results:
        for row in result["rows"]:
            lat = row["latency"] or {}
            print(
                f"{result['mode']:8} {row['subscribers']:>4} {row['server_cpu_pct']:>7.1f} "
                f"{row['server_cpu_pct_per_stream']:>8.2f} {_f(row['delivered_pct']):>7} "
                f"{_f(lat.get('p50_ms')):>7} {_f(lat.get('p95_ms')):>7} "
                f"{_f(lat.get('p99_ms')):>7} {row['server_rss_mb']:>6.0f} "
                f"{row['bots_cpu_pct']:>6.0f}"
            )
        join = result.get("join", {})
        print(
            f"{result['mode']:8} publisher only: {result.get('publisher_only_cpu_pct')}% cpu; "
            f"join→first video frame p50 {join.get('p50_ms')} ms, p95 {join.get('p95_ms')} ms "
            f"(n={join.get('count')}, failed={join.get('failed')}); "
            f"{result.get('stopped', '')} {result.get('error', '')}"
        )
    by_mode = {r["mode"]: {row["subscribers"]: row for row in r["rows"]} for r in results}
    if "forward" in by_mode and "relay" in by_mode:
        print("\nCPU ratio relay / forward at equal N:")
        for n, relay_row in by_mode["relay"].items():
            fwd = by_mode["forward"].get(n)
            if fwd and fwd["server_cpu_pct"] > 0:
                ratio = relay_row["server_cpu_pct"] / fwd["server_cpu_pct"]
                print(f"  N={n}: {ratio:.1f}x")


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def ratios(results: list[dict[str, Any]], base: str = "forward") -> dict[str, dict[int, float]]:
    by_mode = {r["mode"]: {row["subscribers"]: row for row in r["rows"]} for r in results}
    out: dict[str, dict[int, float]] = {}
    for mode, rows in by_mode.items():
        if mode == base:
            continue
        for n, row in rows.items():
            fwd = by_mode.get(base, {}).get(n)
            if fwd and fwd["server_cpu_pct"] > 0:
                out.setdefault(mode, {})[n] = round(
                    row["server_cpu_pct"] / fwd["server_cpu_pct"], 2
                )
    return out


def parse_steps(text: str) -> tuple[int, ...]:
    steps = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    if not steps or steps[0] < 1:
        raise argparse.ArgumentTypeError("steps are positive integers, e.g. 1,2,4,8")
    return steps


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    loopback_only()
    clip = vp8_clip(seconds=10)
    deadline = time.monotonic() + args.time_limit
    results = []
    with tempfile.TemporaryDirectory(prefix="tc-bench-") as tmp:
        for mode in args.modes:
            relay_steps = tuple(n for n in args.steps if n <= args.relay_max)
            results.append(
                await fanout(
                    mode,
                    clip,
                    steps=relay_steps if mode == "relay" else args.steps,
                    window_s=args.window,
                    settle_s=args.settle,
                    workdir=Path(tmp),
                    deadline=deadline,
                    # The relay runs to --relay-max: its delivery drops early, and that is
                    # the finding, not a reason to stop.
                    stop_below=0.5 if mode == "relay" else 0.95,
                )
            )
    return {
        "scenario": "fanout",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "clip": clip_info(clip),
        "window_s": args.window,
        "fanout": results,
        "cpu_ratio_vs_forward": ratios(results),
    }


def arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.forwarding", description=__doc__)
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["forward", "relay"])
    parser.add_argument("--steps", type=parse_steps, default=DEFAULT_STEPS)
    parser.add_argument("--relay-max", type=int, default=8, help="largest N for the relay")
    parser.add_argument("--window", type=float, default=10.0, help="steady window, seconds")
    parser.add_argument("--settle", type=float, default=2.0, help="pause before a window")
    parser.add_argument("--time-limit", type=float, default=900.0, help="whole run, seconds")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    return parser


def main() -> None:
    args = arg_parser().parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    data = asyncio.run(main_async(args))
    print_fanout(data["fanout"])
    out = (
        args.out or REPO / "bench" / "results" / f"{datetime.date.today().isoformat()}-fanout.json"
    )
    write_json(out, data)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
