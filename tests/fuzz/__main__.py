"""``make fuzz``: at least 100,000 fuzzed messages against a real server while a call goes on.

    tests/isolated.sh .venv/bin/python -m tests.fuzz [--messages N] [--seed S]

A ``teleconsult serve`` process; two bots in a call publishing clips, in a process of their
own (tests/fuzz/call.py); Hypothesis' batches drawn beforehand (tests/fuzz/corpus.py); then
fuzzing sockets in every protocol state (tests/fuzz/lanes.py), each paced within its
socket's budgets, until the messages are sent. Meanwhile the server's RSS is sampled from
/proc and the bots' received frame rate compared before, while and after. The server's log
is scanned for tracebacks, "Task exception was never retrieved" and ERROR lines.

Prints a short report and exits 1 on any finding: a crash, an unhandled exception in the
log, an invalid or missing reply, a socket closed without the protocol's reason, RSS over
its bound, the call's frame rate down, or fewer messages sent than asked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import loopback_only
from bench.procstat import rss_bytes
from rooms.consultation import ConsultationKind, new_consultation_id
from rooms.roles import Role
from signaling.keys import load_or_create_secret
from tests.fuzz import corpus
from tests.fuzz.lanes import (
    Arena,
    BeforeJoinLane,
    JoinedLane,
    Lane,
    MidNegotiationLane,
    RecordingLane,
)
from tests.fuzz.strategies import STATES, Frame, State
from tests.integration.server_process import free_port, start_server, stop_server, wait_healthy

log = logging.getLogger("fuzz")

REPO = Path(__file__).resolve().parents[2]
# What in the server's log is a finding (it runs at WARNING: these are all ERROR or worse).
LOG_FINDINGS = re.compile(
    r"Traceback|Task exception was never retrieved|Exception in callback| ERROR | CRITICAL "
)
# The server's own answer timeout (MediaConfig's default): mid-negotiation sockets use it.
ANSWER_TIMEOUT_S = 15.0
# Of the frames drawn, per state: about what the lanes of each state send in a run.
SHARES: dict[State, float] = {
    "before_join": 0.3,
    "joined": 0.3,
    "mid_negotiation": 0.25,
    "recording_pending": 0.125,
    "recording": 0.125,
}


@dataclass
class Window:
    """Video frames received per direction over a stretch of time."""

    start: float
    frames0: dict[str, int]
    end: float = 0.0
    frames1: dict[str, int] = field(default_factory=dict)

    def fps(self) -> dict[str, float]:
        span = max(self.end - self.start, 1e-9)
        return {k: round((self.frames1[k] - self.frames0[k]) / span, 1) for k in self.frames0}


class CallProcess:
    """tests/fuzz/call.py in a child process; its latest line of counts."""

    def __init__(self, base_url: str, token_a: str, token_b: str, log_path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.call", "--base-url", base_url,
             "--token-a", token_a, "--token-b", token_b],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=log_path.open("wb"),
        )  # fmt: skip
        self.ids: list[str] = []
        self.latest: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            line = await loop.run_in_executor(None, self.proc.stdout.readline)
        if not line:
            raise RuntimeError(f"the call's bots did not start (exit {self.proc.poll()})")
        self.ids = json.loads(line)["ids"]
        self._reader = asyncio.create_task(self._read())
        async with asyncio.timeout(timeout):
            while not self.latest:
                await asyncio.sleep(0.1)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.proc.stdout is not None
        while True:
            line = await loop.run_in_executor(None, self.proc.stdout.readline)
            if not line:
                return
            self.latest = json.loads(line)
            self.history.append(self.latest)

    def video(self) -> dict[str, int]:
        return dict(self.latest["video"])

    def window(self) -> Window:
        return Window(time.monotonic(), self.video())

    def close(self, window: Window) -> Window:
        window.end, window.frames1 = time.monotonic(), self.video()
        return window

    def worst_fps(self, start: float, end: float, span_s: float = 5.0) -> dict[str, float]:
        """The lowest frame rate of any ``span_s`` stretch between start and end."""
        rows = [r for r in self.history if start <= r["t"] <= end]
        worst: dict[str, float] = {}
        for i, first in enumerate(rows):
            later = [r for r in rows[i:] if r["t"] - first["t"] >= span_s]
            if not later:
                break
            last = later[0]
            for k in first["video"]:
                fps = (last["video"][k] - first["video"][k]) / (last["t"] - first["t"])
                worst[k] = round(min(worst.get(k, fps), fps), 1)
        return worst

    async def stop(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        for _ in range(200):  # 20 s
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        else:
            self.proc.kill()
            self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()


def plan(arena: Arena, crowd: str) -> list[tuple[Lane, str]]:
    """The lanes of a run, each with the corpus it draws from (its state)."""
    lanes: list[Lane] = [BeforeJoinLane(arena, arena.lobby), BeforeJoinLane(arena, arena.lobby)]
    for role in (Role.nurse, Role.expert, Role.patient):
        lanes.append(JoinedLane(arena, arena.call, role=role))
        lanes.append(
            MidNegotiationLane(arena, arena.call, role=role, answer_timeout_s=ANSWER_TIMEOUT_S)
        )
    # Beside the call: participants who publish (so each gets an offer of its own).
    for role in (Role.patient, Role.nurse):
        lanes.append(JoinedLane(arena, crowd, role=role, publish=["audio", "video"]))
        lanes.append(
            MidNegotiationLane(
                arena, crowd, role=role, publish=["audio", "video"],
                answer_timeout_s=ANSWER_TIMEOUT_S,
            )
        )  # fmt: skip
    # The call's host asks to record the call itself (and never ends it). Only pending:
    # every publisher present is asked, the fuzzing lanes above too, and they never answer.
    lanes.append(
        RecordingLane(arena, arena.call, "recording_pending", exclude={"end", "media_restart"})
    )
    for state in ("recording_pending", "recording", "recording", "recording"):
        lanes.append(
            RecordingLane(arena, new_consultation_id(), state, fresh_consultation=True)  # type: ignore[arg-type]
        )
    return [(lane, lane.state) for lane in lanes]


async def drive(
    lane: Lane,
    pool: dict[State, list[list[Frame]]],
    target: int,
    arena: Arena,
    deadline: float,
) -> None:
    while arena.tally.messages < target and time.monotonic() < deadline:
        queue = pool[lane.state]
        if not queue:
            return
        batch = [f for f in queue.pop() if f.label not in lane.exclude]
        if batch:
            await lane.run_batch(batch)


async def run(args: argparse.Namespace) -> int:
    loopback_only()
    findings: list[str] = []
    report: dict[str, Any] = {"seed": args.seed, "target_messages": args.messages}
    total = sum(SHARES[s] for s in args.states)
    share = {s: args.messages * 1.25 * SHARES[s] / total for s in args.states}
    started = time.monotonic()
    print(f"fuzz: drawing batches (seed {args.seed}) ...", flush=True)
    drawn = await asyncio.to_thread(
        corpus.draw, {s: int(n) for s, n in share.items()}, args.seed, args.workers
    )
    pool = {s: list(reversed(b)) for s, b in drawn.items()}
    report["draw_s"] = round(time.monotonic() - started, 1)

    with tempfile.TemporaryDirectory(prefix="tc-fuzz-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        secret = load_or_create_secret(data_dir)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        server_log = work / "server.log"
        server = start_server(port, data_dir, "--log-level", "WARNING", log=server_log)
        call = None
        lanes: list[tuple[Lane, str]] = []
        arena = None
        try:
            await wait_healthy(base_url, server)
            arena = Arena(base_url, secret, new_consultation_id(), kind=ConsultationKind.ward_round)
            call = CallProcess(
                base_url,
                arena.token(arena.call, Role.expert),
                arena.token(arena.call, Role.patient),
                work / "call.log",
            )
            await call.start()
            arena.protected = set(call.ids)
            await arena.prepare()
            rss_start = rss_bytes(server.pid)
            await asyncio.sleep(args.settle)
            before = call.window()
            await asyncio.sleep(args.window)
            before = call.close(before)

            print(f"fuzz: call up, {before.fps()} fps; fuzzing ...", flush=True)
            lanes = [x for x in plan(arena, new_consultation_id()) if x[1] in args.states]
            deadline = time.monotonic() + args.time_limit
            during = call.window()
            fuzz_started = time.monotonic()
            tasks = [
                asyncio.create_task(drive(lane, pool, args.messages, arena, deadline))
                for lane, _ in lanes
            ]
            rss_peak = rss_start
            last_print = 0.0
            while not all(t.done() for t in tasks):
                await asyncio.sleep(1.0)
                if server.poll() is not None:
                    findings.append(f"the server exited with {server.returncode}")
                    break
                rss_peak = max(rss_peak, rss_bytes(server.pid))
                if call.latest.get("ended"):
                    findings.append(f"the protected call ended: {call.latest['ended']}")
                    break
                if time.monotonic() - last_print > 15:
                    last_print = time.monotonic()
                    rate = arena.tally.messages / (time.monotonic() - fuzz_started)
                    print(
                        f"fuzz: {arena.tally.messages} messages ({rate:.0f}/s), "
                        f"RSS {rss_peak / 2**20:.0f} MiB, findings {len(arena.tally.findings)}",
                        flush=True,
                    )
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    findings.append(f"a lane failed: {result!r}")
            fuzz_s = time.monotonic() - fuzz_started
            during = call.close(during)
            for lane, _ in lanes:
                await lane.close()
            await asyncio.sleep(args.settle)
            after = call.window()
            await asyncio.sleep(args.window)
            after = call.close(after)
            rss_end = rss_bytes(server.pid) if server.poll() is None else 0
            worst = call.worst_fps(during.start, during.end)
            if server.poll() is None:
                await wait_healthy(base_url, server, timeout_s=10)
        finally:
            if arena is not None:
                with contextlib.suppress(Exception):
                    await arena.close()
            for lane, _ in lanes:
                with contextlib.suppress(Exception):
                    await lane.close()
            if call is not None:
                await call.stop()
            alive = server.poll() is None
            code = await asyncio.to_thread(stop_server, server)
        log_text = server_log.read_text(errors="replace")

    tally = arena.tally
    if not alive:
        findings.append(f"crash: the server was not running at the end (exit {code})")
    elif code != 0:
        findings.append(f"the server's shutdown exited with {code}")
    log_hits = [line for line in log_text.splitlines() if LOG_FINDINGS.search(line)]
    if log_hits:
        findings.append(f"{len(log_hits)} error lines in the server's log")
    findings += tally.findings
    if tally.messages < args.messages:
        findings.append(f"only {tally.messages} messages sent of {args.messages}")
    sent_states = {s for s, _ in tally.sent}
    missing = [s for s in args.states if s not in sent_states]
    if missing:
        findings.append(f"states never reached: {missing}")
    rss_growth = (rss_peak - rss_start) / 2**20
    if rss_growth > args.rss_limit_mb:
        findings.append(f"RSS grew {rss_growth:.0f} MiB (bound {args.rss_limit_mb} MiB)")
    fps_before, fps_during, fps_after = before.fps(), during.fps(), after.fps()
    for direction, base in fps_before.items():
        for name, fps in (("while", fps_during), ("after", fps_after)):
            if fps[direction] < args.fps_ratio * base:
                findings.append(
                    f"call {direction}: {fps[direction]} fps {name} fuzzing, {base} before"
                )

    by_state: Counter[str] = Counter()
    by_type: Counter[str] = Counter()
    for (state, label), n in tally.sent.items():
        by_state[state] += n
        by_type[label] += n
    report.update(
        messages=tally.messages,
        fuzz_s=round(fuzz_s, 1),
        messages_per_s=round(tally.messages / max(fuzz_s, 1e-9)),
        sockets=len(lanes) + sum(isinstance(lane, RecordingLane) for lane, _ in lanes),
        sent_by_state=dict(by_state.most_common()),
        sent_by_type=dict(by_type.most_common()),
        errors_by_code=dict(tally.errors.most_common()),
        byes=dict(tally.byes.most_common()),
        closes=dict(tally.closes.most_common()),
        crashes=0 if alive else 1,
        log_error_lines=len(log_hits),
        rss_mib={
            "start": round(rss_start / 2**20),
            "peak": round(rss_peak / 2**20),
            "end": round(rss_end / 2**20),
        },
        video_fps={
            "before": fps_before,
            "while": fps_during,
            "while_worst_5s": worst,
            "after": fps_after,
        },
        # Other work on the machine slows the call too: say how busy it was.
        load_average=round(os.getloadavg()[1], 2),
        findings=findings,
    )
    _print(report, log_hits)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    return 1 if findings else 0


def _print(report: dict[str, Any], log_hits: list[str]) -> None:
    def line(label: str, value: Any) -> None:
        print(f"  {label:<16} {value}")

    print("\nfuzz report")
    line("seed", report["seed"])
    line("messages", f"{report['messages']} in {report['fuzz_s']} s "
         f"({report['messages_per_s']}/s) over {report['sockets']} sockets")  # fmt: skip
    line("by state", report["sent_by_state"])
    line("by type", report["sent_by_type"])
    line("errors by code", report["errors_by_code"])
    line("byes", report["byes"])
    line("closes", report["closes"])
    line("crashes", report["crashes"])
    line("log errors", report["log_error_lines"])
    line("server RSS MiB", report["rss_mib"])
    line("call video fps", report["video_fps"])
    line("machine load", f"{report['load_average']} (5 min average, {os.cpu_count()} cores)")
    for hit in log_hits[:10]:
        print(f"  log: {hit[:300]}")
    if report["findings"]:
        print(f"\n{len(report['findings'])} findings:")
        for finding in report["findings"][:40]:
            print(f"  - {finding}")
    else:
        print("\nno findings")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds of fuzzing")
    parser.add_argument("--window", type=float, default=10.0, help="frame-rate windows, s")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--rss-limit-mb", type=float, default=256.0, help="peak over start")
    parser.add_argument("--fps-ratio", type=float, default=0.9, help="of the rate before")
    parser.add_argument(
        "--states", type=lambda v: v.split(","), default=list(STATES),
        help="fuzz only these states (comma-separated)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="also write the report as JSON")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = secrets.randbelow(10**6)
    logging.basicConfig(level=logging.CRITICAL)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
