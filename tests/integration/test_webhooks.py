"""Webhooks end to end: a real ``serve`` process configured by a TOML file posts every event of
a call to a real receiver that checks each signature and timestamp; the receiver goes down
mid-call, the server restarts, and every event still arrives exactly once (by event id), in
order."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from rooms.roles import Role
from signaling.bot import Bot
from signaling.keys import load_or_create_secret
from signaling.tokens import mint
from tests.integration.server_process import free_port, start_server, stop_server, wait_healthy
from tests.integration.test_events import CALL, DOCTOR, PATIENT, run_call
from tests.webhook_receiver import load_receiver_example

SECRET = "wH7-kP2qV9xR4mT8bN1cY6hJ3dF5gL0sQe"
# The receiver of docs/webhooks.md, as published: it verifies signatures and timestamps.
RECEIVER = load_receiver_example()


@dataclass
class Receiver:
    """The hospital's side: docs/webhook_receiver.py's checks, then dedupe by id."""

    port: int
    secret: bytes
    events: dict[str, dict] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    posts: int = 0
    refused: list[str] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)
    seen: Any = field(default_factory=lambda: RECEIVER.Seen())
    _runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.posts += 1
        body = await request.read()
        try:
            event = RECEIVER.verify(self.secret, request.headers, body)
        except RECEIVER.Refused as exc:
            self.refused.append(str(exc))
            return web.Response(status=401)
        self.heads.append(request.headers.get("X-Teleconsult-Audit-Head", ""))
        if self.seen.first_time(event["id"]):  # a repeat (at least once) is acknowledged too
            self.events[event["id"]] = event
            self.order.append(event["id"])
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/teleconsult", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def types(self) -> list[str]:
        return [self.events[i]["type"] for i in self.order]

    async def until(self, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(self.events) < count:
            await asyncio.sleep(0.1)
        return len(self.events) >= count


def _config(tmp_path: Path, receiver_port: int) -> Path:
    path = tmp_path / "teleconsult.toml"
    path.write_text(
        f"""
[general]
log_level = "INFO"

[webhooks]
webhooks = [
  {{ url = "http://127.0.0.1:{receiver_port}/hooks/teleconsult", secret = "{SECRET}" }},
]
webhook_timeout_s = 2
# Short waits, so the test sees several back-offs within seconds.
webhook_retry_max_s = 1
""",
        encoding="utf-8",
    )
    return path


async def test_every_event_of_a_call_arrives_once_across_a_restart_with_the_receiver_down(
    tmp_path: Path, consultation: str
) -> None:
    data_dir = tmp_path / "data"
    secret = load_or_create_secret(data_dir)
    receiver = Receiver(free_port(), SECRET.encode())
    config = _config(tmp_path, receiver.port)
    port, log = free_port(), tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    bots: list[Bot] = []

    def new_bot(role: Role, name: str, waits: bool | None) -> Bot:
        token = mint(
            secret,
            consultation_id=consultation,
            kind="joint",
            identity=f"his-{role}-1",
            name=name,
            role=role,
            waiting_room=waits,
        )
        bots.append(Bot(base, token))
        return bots[-1]

    async def receiver_goes_down() -> None:
        # The call's first two events arrived while it was up; the rest must wait.
        assert await receiver.until(2, 15), receiver.types()
        await receiver.stop()

    await receiver.start()
    server = start_server(port, data_dir, "--config", str(config), log=log)
    try:
        await wait_healthy(base, server)
        try:
            await run_call(new_bot, after_first_join=receiver_goes_down)
        finally:
            for bot in bots:
                await bot.close()
        # Down for a while: the server keeps trying, backing off.
        await asyncio.sleep(3.0)
    finally:
        assert stop_server(server) == 0
    text = log.read_text(encoding="utf-8")
    assert re.search(r"webhooks: event evt_\w+ to 127\.0\.0\.1 \(wh_\w+\) failed .*attempt 2", text)
    assert receiver.types() == CALL[:2]

    await receiver.start()
    server = start_server(port, data_dir, "--config", str(config), log=tmp_path / "again.log")
    try:
        await wait_healthy(base, server)
        assert await receiver.until(len(CALL), 30), receiver.types()
        await asyncio.sleep(1.5)  # nothing more comes
    finally:
        stop_server(server)
        await receiver.stop()

    # Every event exactly once at the receiver (deduped by id), in the order it happened.
    assert receiver.types() == CALL
    assert receiver.refused == []
    events = [receiver.events[i] for i in receiver.order]
    assert {e["consultation"] for e in events} == {consultation}
    assert {e["identity"] for e in events if "identity" in e} == {"his-doctor-1", "his-patient-1"}
    # Each carries the audit head of its moment, in the body (signed) and at sending.
    seqs = [e["audit"]["seq"] for e in events]
    assert seqs == sorted(seqs) and all(
        re.fullmatch(r"\d+:[0-9a-f]{64}", h) for h in receiver.heads
    )
    text = json.dumps(events, ensure_ascii=False)
    for name in (DOCTOR, PATIENT):
        assert name not in text
