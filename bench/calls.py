"""Many rooms at once (1:1 calls, 4-party calls) and joins per second.

Every participant of a call publishes video (and audio unless told not to) and receives
every other participant. Each publisher has its own send log, so a frame is matched to its
send time by its bytes and its publisher, even though every bot sends the same clip.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    JoinTimes,
    SendLog,
    ServerProcess,
    Window,
    bot_alive,
    close_bots,
    join_and_wait_video,
    latency_summary,
    wait_quiet,
)
from bench.procstat import cpu_percent, udp_delta
from media.clips import Clip
from rooms.consultation import new_consultation_id
from rooms.roles import Role
from signaling.bot import Bot

log = logging.getLogger("bench")

ROLES = (Role.doctor, Role.patient, Role.expert, Role.expert)


class Participant:
    """One bot of a call: its own send log and what it received from each other bot."""

    def __init__(
        self,
        server: ServerProcess,
        consultation: str,
        role: Role,
        clip: Clip,
        audio: Clip | None,
        logs: dict[str, SendLog],
    ) -> None:
        self.sent = SendLog()
        self.logs = logs  # participant id → send log, shared by the whole scenario
        self.arrivals: dict[str, list[tuple[float, float]]] = {}
        self.bot = Bot(
            server.base_url,
            server.token(consultation, role, role.value.title()),
            video=clip,
            audio=audio,
            on_sent=self._on_sent,
            on_frame=self._on_frame,
        )

    def _on_sent(self, data: bytes, at: float) -> None:
        if len(data) > 400:  # video only: Opus packets are ~80 bytes, VP8 frames KBs
            self.sent.on_sent(data, at)

    def _on_frame(self, kind: str, participant_id: str | None, data: bytes, now: float) -> None:
        if kind != "video" or participant_id is None:
            return
        sender = self.logs.get(participant_id)
        sent_at = sender.sent_at.get(data, -1.0) if sender else -1.0
        self.arrivals.setdefault(participant_id, []).append((sent_at, now))


def pair_delivery(
    participants: list[Participant], logs: dict[str, SendLog], t0: float, t1: float
) -> tuple[float | None, list[float], int]:
    expected = got = 0
    latencies: list[float] = []
    for receiver in participants:
        if not bot_alive(receiver.bot):
            continue
        for publisher in participants:
            if publisher is receiver or publisher.bot.participant_id is None:
                continue
            sent = publisher.sent.count(t0, t1)
            expected += sent
            arrivals = receiver.arrivals.get(publisher.bot.participant_id, [])
            matched = [a - s for s, a in arrivals if t0 <= s <= t1]
            got += len(matched)
            latencies += matched
    return (got / expected if expected else None), latencies, expected


async def calls(
    clip: Clip,
    audio: Clip | None,
    *,
    rooms: int,
    size: int,
    window_s: float,
    settle_s: float,
    workdir: Path,
    quiet_wait_s: float = 30.0,
) -> dict[str, Any]:
    """``rooms`` calls of ``size`` participants at once, on one server."""
    server = ServerProcess("forward", workdir)
    await server.start()
    logs: dict[str, SendLog] = {}
    people: list[Participant] = []
    joins = JoinTimes()
    result: dict[str, Any] = {"rooms": rooms, "size": size, "audio": audio is not None}
    try:
        result["rss_idle_mb"] = round(server.rss() / 2**20, 1)
        for _ in range(rooms):
            consultation = new_consultation_id()
            for role in ROLES[:size]:
                person = Participant(server, consultation, role, clip, audio, logs)
                people.append(person)
                await join_and_wait_video_or_alone(person, joins, logs)
        await asyncio.sleep(settle_s)
        quiet = await wait_quiet(server, max_wait_s=quiet_wait_s)
        window = Window.open(server)
        await asyncio.sleep(window_s)
        window.close(server)
        await asyncio.sleep(0.5)
        assert window.server1 is not None and window.bots1 is not None
        per_room = [people[i : i + size] for i in range(0, len(people), size)]
        expected = got = 0.0
        latencies: list[float] = []
        for room in per_room:
            delivered, lat, exp = pair_delivery(room, logs, window.t0, window.t1)
            expected += exp
            got += (delivered or 0.0) * exp
            latencies += lat
        cpu = cpu_percent(window.server0, window.server1)
        streams = rooms * size * (size - 1)
        rss = server.rss()
        result.update(
            participants=len(people),
            participants_alive=sum(bot_alive(p.bot) for p in people),
            forwarded_video_streams=streams,
            server_cpu_pct=round(cpu, 2),
            server_cpu_pct_per_video_stream=round(cpu / streams, 3),
            delivered_pct=round(100 * got / expected, 2) if expected else None,
            latency=latency_summary(latencies),
            server_rss_mb=round(rss / 2**20, 1),
            rss_per_participant_mb=round(
                (rss / 2**20 - result["rss_idle_mb"]) / max(1, len(people)), 2
            ),
            bots_cpu_pct=round(cpu_percent(window.bots0, window.bots1), 1),
            udp=udp_delta(window.udp0, window.udp1),
            others_cpu_pct_before=quiet,
            others_cpu_pct=window.others_cpu_pct,
            worker=(await server.health()).get("worker"),
            join=joins.summary(),
        )
        log.warning(
            "calls %dx%d: cpu=%.1f%% delivered=%s p50=%s",
            rooms,
            size,
            cpu,
            result["delivered_pct"],
            result["latency"]["p50_ms"],
        )
    except Exception as exc:
        log.exception("calls %dx%d failed", rooms, size)
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await close_bots([p.bot for p in people])
        await server.stop()
    return result


async def join_and_wait_video_or_alone(
    person: Participant, joins: JoinTimes, logs: dict[str, SendLog]
) -> None:
    """Join; if someone in the room already publishes, wait (bounded) for their video."""
    bot = person.bot
    started = time.monotonic()
    try:
        await bot.connect()
    except Exception:
        joins.failed += 1
        return
    assert bot.participant_id is not None
    logs[bot.participant_id] = person.sent
    if bot.joined is not None and bot.joined.participants:
        await bot.wait_for(
            lambda: any(i.kind == "video" and i.frames for i in bot.inbound.values()), 10
        )
        joins.add(bot, started)


async def join_burst(
    clip: Clip, *, burst: int, workdir: Path, timeout: float = 20.0
) -> dict[str, Any]:
    """``burst`` subscribers join a running room at the same instant: joins per second."""
    server = ServerProcess("forward", workdir, room_cap=burst + 1)
    await server.start()
    consultation = new_consultation_id()
    publisher = Bot(server.base_url, server.token(consultation, Role.doctor), video=clip)
    bots: list[Bot] = []
    joins = JoinTimes()
    result: dict[str, Any] = {"burst": burst}
    try:
        await publisher.connect()
        await publisher.wait_for(lambda: publisher.tracks["video"].frames_sent >= 30, 15)
        bots = [
            Bot(server.base_url, server.token(consultation, Role.observer)) for _ in range(burst)
        ]
        started = time.monotonic()
        oks = await asyncio.gather(
            *(join_and_wait_video(b, joins, timeout) for b in bots), return_exceptions=True
        )
        elapsed = time.monotonic() - started
        ok = sum(1 for x in oks if x is True)
        result.update(
            ok=ok,
            seconds_to_all_video=round(elapsed, 3),
            joins_per_s=round(ok / elapsed, 2) if elapsed > 0 else None,
            join=joins.summary(),
        )
        log.warning("burst of %d joins: %d ok in %.2f s", burst, ok, elapsed)
    except Exception as exc:
        log.exception("join burst failed")
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await close_bots([publisher, *bots])
        await server.stop()
    return result
