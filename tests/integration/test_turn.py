"""Through a real coturn: a participant that can reach nothing but its TURN server."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from media.clips import Clip
from media.config import IceServer, MediaConfig
from rooms.roles import Role
from signaling.config import ServerConfig
from tests.integration.conftest import Harness, running

USER, PASSWORD = "teleconsult", secrets.token_hex(8)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def turn(tmp_path: Path) -> Iterator[str]:
    if shutil.which("turnserver") is None:
        pytest.skip("coturn is not installed (apt-get install coturn; make test does)")
    port = _free_port()
    command = [
        "turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "--lt-cred-mech",
        "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
        "--min-port=49160", "--max-port=49260", f"--user={USER}:{PASSWORD}",
        "--realm=teleconsult", "--allow-loopback-peers", "--simple-log",
        f"--log-file={tmp_path / 'turn.log'}", f"--pidfile={tmp_path / 'turn.pid'}",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        log = tmp_path / "turn.log"
        if log.exists() and "listener opened on" in log.read_text(errors="replace"):
            break
        time.sleep(0.1)
    try:
        yield f"turn:127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def turn_harness(turn: str, tmp_path: Path) -> AsyncIterator[Harness]:
    config = ServerConfig(
        data_dir=tmp_path / "data",
        secret=secrets.token_bytes(32),
        media=MediaConfig(ice_servers=(IceServer((turn,), USER, PASSWORD),)),
    )
    async with running(config) as harness:
        yield harness


async def test_relay_only_participants_talk_through_turn(
    turn_harness: Harness, turn: str, consultation: str, video_clip: Clip
) -> None:
    harness = turn_harness
    doctor = harness.bot(harness.token(consultation, Role.doctor), video=video_clip)
    patient = harness.bot(
        harness.token(consultation, Role.patient), video=video_clip, relay_only=True
    )
    await doctor.connect()
    await patient.connect()
    # The configured server reaches clients as is.
    assert patient.joined is not None
    (handed,) = patient.joined.iceServers
    assert handed.urls == [turn] and handed.username == USER and handed.credential == PASSWORD
    assert await patient.wait_for(
        lambda: (
            patient.frames_from(doctor.participant_id, "video") > 30
            and doctor.frames_from(patient.participant_id, "video") > 30
        ),
        20,
    )
    # Relay-only: every candidate the patient offered was a TURN relay.
    assert patient.pc is not None
    transport = patient.pc.getTransceivers()[0].receiver.transport.transport
    kinds = {c.type for c in transport.iceGatherer.getLocalCandidates()}
    assert kinds == {"relay"}
