"""The call the fuzzer must not disturb: two bots publishing clips to each other.

Both are honest: they answer every offer and agree to every recording request (so only the
fuzzer's own hold-out participant keeps a recording pending). ``python -m tests.fuzz.call``
runs them in a process of their own and prints, once a second, a JSON line with the frames
each has received from the other, so the fuzzer's own CPU cannot slow what they measure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time

from media.clips import Clip, opus_clip, vp8_clip
from signaling import protocol as p
from signaling.bot import Bot

CONNECT_TIMEOUT_S = 15.0


class ProtectedCall:
    def __init__(self, a: Bot, b: Bot) -> None:
        self.a, self.b = a, b
        self._consenting: asyncio.Task[None] | None = None

    @staticmethod
    def clips() -> tuple[Clip, Clip]:
        return vp8_clip(seconds=10), opus_clip(seconds=10)

    @property
    def ids(self) -> set[str]:
        return {x for x in (self.a.participant_id, self.b.participant_id) if x}

    async def start(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        await self.a.connect()
        await self.b.connect()
        self._consenting = asyncio.create_task(self._consent_forever(), name="call-consent")
        if not await self.a.wait_for(lambda: min(self.video().values()) > 30, timeout):
            raise AssertionError(f"the protected call did not start: {self.video()}")

    def video(self) -> dict[str, int]:
        """Video frames received so far, per direction."""
        a, b = self.a, self.b
        assert a.participant_id is not None and b.participant_id is not None
        return {
            "a<-b": a.frames_from(b.participant_id, "video"),
            "b<-a": b.frames_from(a.participant_id, "video"),
        }

    def audio(self) -> dict[str, int]:
        a, b = self.a, self.b
        assert a.participant_id is not None and b.participant_id is not None
        return {
            "a<-b": a.frames_from(b.participant_id, "audio"),
            "b<-a": b.frames_from(a.participant_id, "audio"),
        }

    async def flowing(self, frames: int = 30, timeout: float = 10.0) -> bool:
        """Both directions receive ``frames`` more video frames within ``timeout``."""
        start = self.video()
        return await self.a.wait_for(
            lambda: all(self.video()[k] >= start[k] + frames for k in start), timeout
        )

    def ended(self) -> str | None:
        for bot in (self.a, self.b):
            if bot.bye is not None:
                return f"bye {bot.bye.reason}"
            if bot.close_code is not None:
                return f"closed {bot.close_code}"
        return None

    async def _consent_forever(self) -> None:
        seen = {id(self.a): 0, id(self.b): 0}
        while True:
            for bot in (self.a, self.b):
                events = bot.events
                for event in events[seen[id(bot)] :]:
                    if isinstance(event, p.ConsentRequest):
                        with contextlib.suppress(Exception):
                            await bot.send(p.Consent(type="consent", granted=True))
                seen[id(bot)] = len(events)
                # Bots keep every event; the fuzzer makes many: keep the list short.
                if len(events) > 1000:
                    del events[:500]
                    seen[id(bot)] -= 500
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._consenting is not None:
            self._consenting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consenting
        await self.a.close()
        await self.b.close()


async def _serve(args: argparse.Namespace) -> None:
    from bench.harness import loopback_only

    loopback_only()
    video, audio = ProtectedCall.clips()
    call = ProtectedCall(
        Bot(args.base_url, args.token_a, video=video, audio=audio),
        Bot(args.base_url, args.token_b, video=video, audio=audio),
    )
    await call.start()
    print(json.dumps({"ids": sorted(call.ids)}), flush=True)
    eof = asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    try:
        for _ in range(int(args.max_s)):
            line = {"t": time.monotonic(), "video": call.video(), "audio": call.audio()}
            ended = call.ended()
            if ended:
                line["ended"] = ended
            print(json.dumps(line), flush=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await asyncio.shield(eof)
            if eof.done():
                break
    finally:
        await call.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.call", description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token-a", required=True)
    parser.add_argument("--token-b", required=True)
    parser.add_argument("--max-s", type=float, default=3600.0, help="stop after this long")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
