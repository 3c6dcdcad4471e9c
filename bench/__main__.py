"""The whole benchmark: ``python -m bench`` (what ``make bench`` runs, under tests/isolated.sh).

Scenarios, each against a fresh server process, in one run so baselines share the machine's
state: fan-out (forward, MediaRelay, Janus), many 1:1 calls, many 4-party calls, join bursts,
and a ward round with 1 → 100 observers.
Writes bench/results/<date>.json and regenerates docs/benchmarks.md with its plots.
``--smoke`` runs every scenario tiny (seconds) and writes nothing into the repo.
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

from bench import calls as calls_mod
from bench import janus
from bench.adaptation import adaptation, print_adaptation
from bench.forwarding import DEFAULT_STEPS, fanout, parse_steps, print_fanout, ratios
from bench.harness import REPO, clip_info, loopback_only, machine_info, write_json
from bench.wardround import DEFAULT_STEPS as WARD_STEPS
from bench.wardround import print_ward_round, ward_round
from media.clips import opus_clip, vp8_clip

log = logging.getLogger("bench")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loopback_only()
    clip = vp8_clip(seconds=10)
    audio = opus_clip(seconds=10)
    started = time.monotonic()
    deadline = started + args.time_limit
    data: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": args.command_line,
        "machine": machine_info(),
        "clip": clip_info(clip),
        "window_s": args.window,
    }
    with tempfile.TemporaryDirectory(prefix="tc-bench-") as tmp:
        work = Path(tmp)
        fan: list[dict[str, Any]] = []
        for mode in args.modes:
            # The relay saturates a core within a few subscribers; Janus goes as far as we do.
            steps = tuple(n for n in args.steps if mode != "relay" or n <= args.baseline_max)
            if mode == "janus":
                fan.append(
                    await janus.fanout(
                        clip,
                        steps=steps,
                        window_s=args.window,
                        settle_s=args.settle,
                        workdir=work,
                        deadline=deadline,
                        quiet_wait_s=args.quiet_wait,
                    )
                )
                continue
            fan.append(
                await fanout(
                    mode,
                    clip,
                    steps=steps,
                    window_s=args.window,
                    settle_s=args.settle,
                    workdir=work,
                    deadline=deadline,
                    stop_below=0.5,
                    quiet_wait_s=args.quiet_wait,
                )
            )
        data["fanout"] = fan
        data["cpu_ratio_vs_forward"] = ratios(fan)
        data["calls"] = []
        for rooms, size in args.calls:
            if time.monotonic() > deadline:
                break
            data["calls"].append(
                await calls_mod.calls(
                    clip,
                    audio,
                    rooms=rooms,
                    size=size,
                    window_s=args.window,
                    settle_s=args.settle,
                    workdir=work,
                    quiet_wait_s=args.quiet_wait,
                )
            )
        data["join_bursts"] = []
        for burst in args.bursts:
            if time.monotonic() > deadline:
                break
            data["join_bursts"].append(await calls_mod.join_burst(clip, burst=burst, workdir=work))
        if args.adaptation and time.monotonic() < deadline:
            data["adaptation"] = await adaptation(
                clip,
                audio,
                healthy=args.adaptation_healthy,
                window_s=args.window if not args.smoke else 2.0,
                settle_s=args.settle,
                adapt_s=10.0 if not args.smoke else 1.0,
                workdir=work,
                quiet_wait_s=args.quiet_wait,
            )
        if time.monotonic() < deadline:
            data["ward_round"] = await ward_round(
                clip,
                audio,
                steps=args.ward_steps,
                window_s=args.window,
                settle_s=args.settle,
                workdir=work,
                quiet_wait_s=args.quiet_wait,
                deadline=deadline,
            )
    data["elapsed_s"] = round(time.monotonic() - started, 1)
    return data


def _calls(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        rooms, _, size = item.partition("x")
        out.append((int(rooms), int(size)))
    return out


def main() -> None:
    import sys

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="every scenario, tiny")
    parser.add_argument("--modes", type=lambda s: s.split(","), default=None)
    parser.add_argument("--steps", type=parse_steps, default=DEFAULT_STEPS)
    parser.add_argument("--baseline-max", type=int, default=8, help="largest N for the relay")
    parser.add_argument("--calls", type=_calls, default=[(8, 2), (3, 4)], help="ROOMSxSIZE,...")
    parser.add_argument("--bursts", type=lambda s: [int(x) for x in s.split(",")], default=[10, 20])
    parser.add_argument(
        "--ward-steps", type=parse_steps, default=WARD_STEPS, help="observers in a ward round"
    )
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument(
        "--adaptation", type=int, default=1, help="run the constrained-subscriber scenario (0: no)"
    )
    parser.add_argument("--adaptation-healthy", type=int, default=4)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each window, wait up to this long for other processes to go quiet",
    )
    parser.add_argument("--time-limit", type=float, default=1200.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-docs", action="store_true", help="do not regenerate the docs")
    args = parser.parse_args()
    args.command_line = "python -m bench " + " ".join(sys.argv[1:])
    if args.modes is None:
        args.modes = ["forward", "relay", "janus"]
    if args.smoke:
        args.steps, args.baseline_max, args.calls, args.bursts = (1, 2), 1, [(1, 2)], [3]
        args.ward_steps = (1, 2)
        args.window, args.settle, args.time_limit, args.quiet_wait = 1.5, 0.5, 120.0, 0.0
        args.modes = [m for m in args.modes if m != "janus"]
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    data = asyncio.run(run(args))
    print_fanout(data["fanout"])
    if data.get("adaptation"):
        print_adaptation(data["adaptation"])
    for call in data["calls"]:
        print(
            f"calls {call['rooms']}x{call['size']}: cpu {call.get('server_cpu_pct')}% for "
            f"{call.get('forwarded_video_streams')} video streams, delivered "
            f"{call.get('delivered_pct')}%, latency {call.get('latency')}, "
            f"RSS/participant {call.get('rss_per_participant_mb')} MB, "
            f"bots {call.get('bots_cpu_pct')}% {call.get('error', '')}"
        )
    if "ward_round" in data:
        print_ward_round(data["ward_round"])
    for burst in data["join_bursts"]:
        print(
            f"join burst {burst['burst']}: {burst.get('ok')} ok, "
            f"{burst.get('joins_per_s')} joins/s, join {burst.get('join')} {burst.get('error', '')}"
        )
    if args.smoke:
        out = args.out or Path(tempfile.gettempdir()) / "tc-bench-smoke.json"
        write_json(out, data)
        print(f"\nsmoke ok; wrote {out}")
        return
    out = args.out or REPO / "bench" / "results" / f"{datetime.date.today().isoformat()}.json"
    write_json(out, data)
    print(f"\nwrote {out}")
    if not args.no_docs:
        from bench import report

        report.generate(data, out)


if __name__ == "__main__":
    main()
