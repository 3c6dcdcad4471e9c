"""A constrained subscriber: what it gets, what it costs the others, and the Worker's CPU.

    tests/isolated.sh .venv/bin/python -m bench.adaptation

One publisher, ``healthy`` subscribers on clean loopback, and (in the second run) one more
whose bot loses a fraction of its incoming RTP, as on a weak link. Both runs use a fresh
server process in the same bench run, so the difference is the weak subscriber: per
subscriber, the video frame rate and bitrate delivered in a steady window; the publisher's
keyframes in that window; the server's CPU (the cost of judging PLIs, estimating rates and
dropping frames per Consumer, plus the one subscriber's retransmissions).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    JoinTimes,
    ServerProcess,
    Window,
    close_bots,
    join_and_wait_video,
    loopback_only,
    wait_quiet,
)
from bench.procstat import cpu_percent
from media.clips import Clip, opus_clip, vp8_clip
from rooms.consultation import new_consultation_id
from rooms.roles import Role
from signaling.bot import Bot

log = logging.getLogger("bench")


def _video(bot: Bot) -> tuple[int, int]:
    frames = sum(i.frames for i in bot.inbound.values() if i.kind == "video")
    size = sum(i.bytes for i in bot.inbound.values() if i.kind == "video")
    return frames, size


def _audio(bot: Bot) -> int:
    return sum(i.frames for i in bot.inbound.values() if i.kind == "audio")


async def _one(
    clip: Clip,
    audio: Clip,
    *,
    healthy: int,
    weak_loss: float | None,
    window_s: float,
    settle_s: float,
    adapt_s: float,
    workdir: Path,
    quiet_wait_s: float,
) -> dict[str, Any]:
    server = ServerProcess("forward", workdir, room_cap=healthy + 3)
    await server.start()
    consultation = new_consultation_id()
    publisher = Bot(
        server.base_url, server.token(consultation, Role.doctor, "Publisher"), video=clip,
        audio=audio,
    )  # fmt: skip
    bots: list[Bot] = []
    result: dict[str, Any] = {"healthy": healthy, "weak_loss": weak_loss}
    try:
        await publisher.connect()
        await publisher.wait_for(lambda: publisher.tracks["video"].frames_sent >= 30, timeout=15)
        joins = JoinTimes()
        for i in range(healthy):
            bot = Bot(server.base_url, server.token(consultation, Role.observer, f"Sub {i}"))
            bots.append(bot)
            await join_and_wait_video(bot, joins)
        weak: Bot | None = None
        if weak_loss is not None:
            weak = Bot(
                server.base_url,
                server.token(consultation, Role.observer, "Weak"),
                receive_loss=weak_loss,
            )
            bots.append(weak)
            await join_and_wait_video(weak, joins)
            # Long enough for its estimate to settle on what its link carries.
            await asyncio.sleep(adapt_s)
        await asyncio.sleep(settle_s)
        result["others_cpu_pct_before"] = await wait_quiet(server, max_wait_s=quiet_wait_s)
        track = publisher.tracks["video"]
        asked0, keys0 = track.keyframe_requests, track.keyframes_sent
        before = [(_video(b), _audio(b)) for b in bots]
        window = Window.open(server)
        await asyncio.sleep(window_s)
        window.close(server)
        assert window.server1 is not None
        elapsed = window.server1.wall - window.server0.wall
        subs = []
        for bot, ((f0, b0), a0) in zip(bots, before, strict=True):
            (f1, b1), a1 = _video(bot), _audio(bot)
            subs.append(
                {
                    "weak": bot is weak,
                    "video_fps": round((f1 - f0) / elapsed, 1),
                    "video_kbps": round((b1 - b0) * 8 / elapsed / 1000, 1),
                    "audio_fps": round((a1 - a0) / elapsed, 1),
                }
            )
        result.update(
            subscribers=subs,
            server_cpu_pct=round(cpu_percent(window.server0, window.server1), 2),
            publisher_keyframe_requests=track.keyframe_requests - asked0,
            publisher_keyframes=track.keyframes_sent - keys0,
            window_s=round(elapsed, 1),
        )
    except Exception as exc:  # reported, never a crash of the whole bench
        log.exception("adaptation failed")
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await close_bots([publisher, *bots])
        await server.stop()
    return result


async def adaptation(
    clip: Clip,
    audio: Clip,
    *,
    healthy: int = 4,
    weak_loss: float = 0.3,
    window_s: float = 15.0,
    settle_s: float = 2.0,
    adapt_s: float = 10.0,
    workdir: Path,
    quiet_wait_s: float = 30.0,
) -> dict[str, Any]:
    common = dict(
        healthy=healthy, window_s=window_s, settle_s=settle_s, adapt_s=adapt_s, workdir=workdir,
        quiet_wait_s=quiet_wait_s,
    )  # fmt: skip
    clean = await _one(clip, audio, weak_loss=None, **common)  # type: ignore[arg-type]
    lossy = await _one(clip, audio, weak_loss=weak_loss, **common)  # type: ignore[arg-type]
    return {"clean": clean, "with_weak": lossy}


def print_adaptation(data: dict[str, Any]) -> None:
    for name in ("clean", "with_weak"):
        run = data[name]
        if "error" in run:
            print(f"{name}: {run['error']}")
            continue
        print(
            f"{name}: cpu {run['server_cpu_pct']}%, publisher keyframes "
            f"{run['publisher_keyframes']} (asked {run['publisher_keyframe_requests']}) "
            f"in {run['window_s']} s"
        )
        for s in run["subscribers"]:
            tag = "weak" if s["weak"] else "clean"
            print(f"  {tag}: {s['video_fps']} fps {s['video_kbps']} kbps, audio {s['audio_fps']}/s")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.adaptation", description=__doc__)
    parser.add_argument("--healthy", type=int, default=4)
    parser.add_argument("--loss", type=float, default=0.3)
    parser.add_argument("--window", type=float, default=15.0)
    args = parser.parse_args()
    loopback_only()
    logging.basicConfig(level=logging.WARNING)

    async def go() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="tc-bench-") as tmp:
            return await adaptation(
                vp8_clip(seconds=10), opus_clip(seconds=10), healthy=args.healthy,
                weak_loss=args.loss, window_s=args.window, workdir=Path(tmp),
            )  # fmt: skip

    started = time.monotonic()
    print_adaptation(asyncio.run(go()))
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
