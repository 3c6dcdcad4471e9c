"""``teleconsult cluster`` (``make cluster``): one command starts a private redis-server, two
signaling nodes and two media Workers, and prints a join link on each node of one
consultation; following both links, the two participants see each other; Ctrl-C stops it all."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from media.clips import Clip
from signaling.bot import Bot
from tests.integration.server_process import free_port

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _start(directory: Path, first: int, redis_port: int, out: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "signaling.cli", "cluster", "--dir", str(directory),
             "--port", str(first), "--redis-port", str(redis_port)],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _running_in(directory: Path) -> list[int]:
    """Processes whose command line names ``directory`` (the nodes, Redis)."""
    found = subprocess.run(["pgrep", "-f", str(directory)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


async def test_the_cluster_command_runs_a_cluster_a_newcomer_can_call_through(
    tmp_path: Path, video_clip: Clip, audio_clip: Clip
) -> None:
    first, redis_port = free_port(), free_port()
    while free_port() == first + 1:  # crude: the second node takes the next port
        pass
    out = tmp_path / "cluster.out"
    process = _start(tmp_path / "c", first, redis_port, out)
    bots: list[Bot] = []
    try:
        deadline = time.monotonic() + 90
        while "Ctrl-C" not in out.read_text():
            assert process.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            await asyncio.sleep(0.3)
        links = [line.split(": ", 1)[1] for line in out.read_text().splitlines()
                 if line.startswith(("  doctor: ", "  patient: "))]  # fmt: skip
        assert len(links) == 2
        assert f":{first}/join/" in links[0] and f":{first + 1}/join/" in links[1]
        for link in links:
            base, token = link.split("/join/")
            bots.append(Bot(base, token, video=video_clip, audio=audio_clip))
        for bot in bots:
            await bot.connect(timeout=20)
        doctor, patient = bots
        assert await doctor.wait_for(
            lambda: doctor.frames_from(patient.participant_id, "video") > 30, 25
        )
        assert await patient.wait_for(
            lambda: patient.frames_from(doctor.participant_id, "video") > 30, 25
        )
    finally:
        for bot in bots:
            await bot.close()
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    assert code == 0
    # Nothing left running: the nodes, their Workers and Redis are gone.
    await asyncio.sleep(0.5)
    assert [pid for pid in _running_in(tmp_path / "c") if pid != os.getpid()] == []
