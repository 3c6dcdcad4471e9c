"""Observer bots in a child process of the benchmark (``python -m bench.observers``).

A hundred receiving aiortc bots need more than the one core a Python process has, so the
ward-round scenario (bench/wardround.py) spreads them over a few of these. Commands arrive
as JSON lines on stdin, answers leave as JSON lines on stdout:

- ``{"op": "join", "url": ..., "token": ...}`` → ``{"op": "joined", "ok", "join_s"}``: one
  more observer, answered once its first video frame arrived (or it gave up);
- ``{"op": "frames", "t0", "t1"}`` → ``{"op": "frames", "video": [[sha1, arrival], ...],
  "audio": n, "alive": n}``: every video frame that arrived in [t0, t1] (the bots share the
  machine's monotonic clock with the parent), named by a hash of its bytes so the parent
  can find its send time, and the audio frames received meanwhile;
- ``{"op": "quit"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sys
import time

from bench.harness import loopback_only
from signaling.bot import Bot


class Observers:
    def __init__(self) -> None:
        self.bots: list[Bot] = []
        # (hash, arrival) of video frames; (arrival) of audio frames; trimmed on each report.
        self.video: list[tuple[str, float]] = []
        self.audio: list[float] = []

    def on_frame(self, kind: str, participant_id: str | None, data: bytes, now: float) -> None:
        if kind == "video":
            self.video.append((hashlib.sha1(data).hexdigest()[:16], now))
        else:
            self.audio.append(now)

    async def join(self, url: str, token: str) -> dict[str, object]:
        bot = Bot(url, token, on_frame=self.on_frame)
        self.bots.append(bot)
        started = time.monotonic()
        try:
            await bot.connect(timeout=15)
        except Exception as exc:
            print(f"observer: join failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return {"op": "joined", "ok": False, "join_s": None}
        ok = await bot.wait_for(
            lambda: any(i.kind == "video" and i.frames for i in bot.inbound.values()), 15
        )
        firsts = [
            i.first_frame_at
            for i in bot.inbound.values()
            if i.kind == "video" and i.first_frame_at is not None
        ]
        join_s = min(firsts) - started if firsts else None
        return {"op": "joined", "ok": ok, "join_s": join_s}

    def frames(self, t0: float, t1: float) -> dict[str, object]:
        video = [[h, a] for h, a in self.video if t0 <= a <= t1]
        audio = sum(1 for a in self.audio if t0 <= a <= t1)
        self.video = [x for x in self.video if x[1] > t1]
        self.audio = [a for a in self.audio if a > t1]
        alive = sum(1 for b in self.bots if b.joined and b.close_code is None and b.bye is None)
        return {"op": "frames", "video": video, "audio": audio, "alive": alive}

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(20):
                await asyncio.gather(*(b.close() for b in self.bots), return_exceptions=True)


async def main() -> None:
    loopback_only()
    observers = Observers()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            command = json.loads(line)
            op = command["op"]
            if op == "join":
                answer = await observers.join(command["url"], command["token"])
            elif op == "frames":
                answer = observers.frames(float(command["t0"]), float(command["t1"]))
            else:
                break
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        await observers.close()


if __name__ == "__main__":
    asyncio.run(main())
