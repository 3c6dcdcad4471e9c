"""What relaying through another signaling node costs (``python -m bench.nodes``).

Runs ``teleconsult cluster`` (a private redis-server, two signaling nodes, two Workers) and
measures, in the same run, the same thing through the node that owns the consultation's
Room and through the other node, which relays to it over Redis:

* join → ``joined``: a receive-only bot's socket opened and joined, N times;
* a message round trip: a patient's ``record`` (which the Room refuses, ``forbidden``) until
  its ``error`` arrives, N times, 50 ms apart (well under the rate limit).

Prints medians and 95th percentiles in ms and the ratio relayed / owner.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rooms.roles import Role
from signaling import protocol as p
from signaling.bot import Bot
from signaling.tokens import mint


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(directory: Path, port: int, redis_port: int, out: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "signaling.cli", "cluster", "--dir", str(directory),
             "--port", str(port), "--redis-port", str(redis_port)],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _measure(urls: list[str], secret: bytes, n: int) -> dict[str, dict[str, list[float]]]:
    consultation = "bench-nodes-1"

    def token(role: Role, i: int) -> str:
        return mint(secret, consultation_id=consultation, kind="joint", identity=f"{role}-{i}",
                    name="N", role=role, waiting_room=False)  # fmt: skip

    owner = Bot(urls[0], token(Role.doctor, 0))
    await owner.connect(timeout=30)  # node 1 owns the Room from now on
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for label, url in (("owner", urls[0]), ("relayed", urls[1])):
            joins: list[float] = []
            for i in range(n):
                bot = Bot(url, token(Role.observer, i + (0 if label == "owner" else n)))
                started = time.perf_counter()
                await bot.connect(timeout=30)
                joins.append((time.perf_counter() - started) * 1000)
                await bot.close()
                await asyncio.sleep(0.3)  # its seat is given back (the cap is 8)
            patient = Bot(url, token(Role.patient, 1 if label == "owner" else 2))
            await patient.connect(timeout=30)
            trips: list[float] = []
            for _ in range(n):
                before = len(patient.errors)
                started = time.perf_counter()
                await patient.send(p.Record(type="record", action="start"))
                limit = time.monotonic() + 5
                while len(patient.errors) <= before:  # polled every ms: Bot.wait_for is 20 ms
                    if time.monotonic() > limit:
                        raise RuntimeError("no answer")
                    await asyncio.sleep(0.001)
                trips.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.05)
            await patient.close()
            results[label] = {"join": joins, "round_trip": trips}
    finally:
        await owner.close()
    return results


async def main_async(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory, out = Path(tmp) / "c", Path(tmp) / "cluster.out"
        port, redis_port = _free_port(), _free_port()
        process = _start(directory, port, redis_port, out)
        try:
            deadline = time.monotonic() + 90
            while "Ctrl-C" not in out.read_text():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(out.read_text())
                await asyncio.sleep(0.3)
            secret = (directory / "secret").read_text().strip().encode()
            urls = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
            results = await _measure(urls, secret, n)
        finally:
            process.send_signal(2)
            process.wait(timeout=60)
    print(f"n={n} per cell; ms")
    print("| what | through the owner p50 / p95 | relayed p50 / p95 | relayed / owner (p50) |")
    print("|---|---|---|---|")
    for what in ("join", "round_trip"):
        own, rel = results["owner"][what], results["relayed"][what]
        print(
            f"| {what} | {statistics.median(own):.1f} / {_pct(own, 0.95):.1f} "
            f"| {statistics.median(rel):.1f} / {_pct(rel, 0.95):.1f} "
            f"| {statistics.median(rel) / statistics.median(own):.2f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="measurements per cell")
    args = parser.parse_args()
    asyncio.run(main_async(args.n))


if __name__ == "__main__":
    main()
