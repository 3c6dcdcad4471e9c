"""A power cut mid-write leaves a torn audit line: the real ``serve`` recovers and serves."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from rooms.roles import Role
from signaling.bot import Bot
from signaling.keys import load_or_create_secret
from signaling.tokens import mint
from tests.integration.server_process import free_port, start_server, wait_healthy

NAME = "Zhao Meiling"


def _actions(log: Path) -> list[str]:
    return [json.loads(line)["action"] for line in log.read_bytes().splitlines() if line.strip()]


async def _a_call_then_kill_9(data_dir: Path, output: Path) -> None:
    """Two people join and leave, the entries reach the file, then the process dies."""
    secret = load_or_create_secret(data_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(port, data_dir, log=output, with_stdout=True)
    bots: list[Bot] = []
    try:
        await wait_healthy(base, server)
        for role in (Role.doctor, Role.patient):
            token = mint(
                secret,
                consultation_id="audit-torn-1",
                kind="joint",
                identity=f"id-{role}",
                name=NAME,
                role=role,
                waiting_room=False,
            )
            bots.append(Bot(base, token))
        for bot in bots:
            await bot.connect()
        while bots:
            await bots.pop().close()
        log = data_dir / "audit.log"
        deadline = time.monotonic() + 10
        while _actions(log).count("leave") < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert _actions(log).count("leave") == 2
        # No shutdown, so no checkpoint of these entries: as a power cut would leave it.
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
    finally:
        for bot in bots:
            await bot.close()
        if server.poll() is None:
            server.kill()
            server.wait()


async def test_a_torn_last_line_is_moved_aside_and_serve_starts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    log = data_dir / "audit.log"
    first_output, second_output = tmp_path / "serve-1.out", tmp_path / "serve-2.out"
    await _a_call_then_kill_9(data_dir, first_output)

    # The power cut: the last line half written.
    lines = log.read_bytes().splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]
    log.write_bytes(b"".join(lines[:-1]) + torn)

    port = free_port()
    server = start_server(port, data_dir, log=second_output, with_stdout=True)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", server)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    (aside,) = data_dir.glob("audit.log.torn-*")
    assert aside.read_bytes() == torn
    entries = [json.loads(line) for line in log.read_bytes().splitlines()]
    assert [e["action"] for e in entries][: len(lines) - 1] == [
        json.loads(line)["action"] for line in lines[:-1]
    ]
    (recovered,) = [e for e in entries if e["action"] == "audit_recovered"]
    assert recovered["file"] == "audit.log" and recovered["moved_to"] == aside.name
    assert (recovered["line"], recovered["bytes"]) == (len(lines), len(torn))
    assert not [e for e in entries if e["action"] == "audit_chain_broken"]
    said = second_output.read_text()
    assert "moved the incomplete last line" in said and aside.name in said

    verify = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "signaling.cli", "audit", "verify", "--data-dir", str(data_dir)],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    said, _ = await asyncio.wait_for(verify.communicate(), 60)
    assert verify.returncode == 0, said
    assert b", 0 problems" in said

    # No name in anything the audit log wrote or said, escaped or not.
    for path in [*data_dir.glob("audit*"), first_output, second_output]:
        raw = path.read_bytes()
        assert NAME.encode() not in raw, path
        for line in raw.splitlines():
            try:
                decoded = json.dumps(json.loads(line), ensure_ascii=False)
            except ValueError:
                continue  # the torn half line, or the server's own output
            assert NAME not in decoded, path
