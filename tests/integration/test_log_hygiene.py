"""The real server's log: no join token in any spelling, no line a client can forge."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from media.clips import Clip
from rooms.roles import Role
from signaling import protocol as p
from signaling.bot import Bot
from signaling.keys import load_or_create_secret
from signaling.tokens import mint
from tests.integration.server_process import free_port, start_server, stop_server, wait_healthy

NAME = "Zhao Meiling"
FORGED = "FORGED-LINE"


def _get(port: int, target: str, *headers: str) -> bytes:
    """One raw request, the path sent exactly as written (an HTTP client would tidy it)."""
    head = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


@pytest.fixture
async def served(tmp_path: Path) -> tuple[int, bytes, Path]:
    data_dir = tmp_path / "data"
    secret = load_or_create_secret(data_dir)
    port = free_port()
    log = tmp_path / "server.log"
    server = start_server(port, data_dir, log=log)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}")
        yield port, secret, log
    finally:
        stop_server(server)


async def test_no_token_in_any_spelling_and_no_forged_line(
    served: tuple[int, bytes, Path], consultation: str, video_clip: Clip
) -> None:
    port, secret, log = served
    token = mint(
        secret,
        consultation_id=consultation,
        kind="joint",
        identity="id-doctor",
        name=NAME,
        role=Role.doctor,
    )
    head, payload, signature = token.split(".")
    targets = [
        f"/JOIN/{token}",
        f"//join/{token}",
        f"/join/x?Token={token}",
        f"/join/x;token={token}",
        f"/api/consultations/{token}/recordings",
        f"/api/consultations/{consultation}/recordings?TOKEN={token}",
        f"/join/{head}.{payload}",  # cut short when pasted: the payload still has the name
    ]
    for target in targets:
        await asyncio.to_thread(_get, port, target)
    referer = f"Referer: http://127.0.0.1:{port}/join/{token}"
    await asyncio.to_thread(_get, port, "/healthz", referer, f"User-Agent: {token}")

    # A client's text with a line break and a terminal escape, in places that reach the log.
    bot = Bot(f"http://127.0.0.1:{port}", token, video=video_clip)
    try:
        await bot.connect()
        await bot.send(
            p.Candidate(
                type="candidate",
                candidate=f"candidate:1 1 udp 1 10.9.8.7\x1b[2J\x1b]0;{FORGED}\x07 9 typ host",
                sdpMid="0",
            )
        )
        await bot.send(
            p.Candidate(
                type="candidate",
                candidate=f"candidate:1 1 udp 1 192.0.2.1 9 typ host\n2026 INFO x: {FORGED}",
                sdpMid="0",
            )
        )
        await bot.send_raw(f'{{"type": "ping", "oops": "\\n{FORGED}\\u001b[31m"}}')
        await bot.send(p.Ping(type="ping", ts=1.0))
        # Messages are handled in order: after the pong, all the above has been handled.
        assert await bot.wait_for(lambda: any(isinstance(e, p.Pong) for e in bot.events), 10)
    finally:
        await bot.close()
    await asyncio.sleep(0.5)

    text = log.read_text(encoding="utf-8", errors="replace")
    for part in (payload, signature, token):
        assert part not in text
    assert NAME not in text
    assert "\x1b" not in text and "\x07" not in text
    for line in text.splitlines():
        # Every line starts a record (a timestamp) or continues one (indented).
        assert line[:2].isdigit() or line.startswith(" "), repr(line)
        assert not line.lstrip().startswith(("2026 INFO", FORGED)), repr(line)
    # The masked spellings are there, so the requests were logged at all.
    assert text.count("<token>") >= len(targets)
    assert "\\x1b[2J" in text  # the candidate reached the log, escaped
