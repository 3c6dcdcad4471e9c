"""kill -9 of the real server process mid-recording: what was written stays readable."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import av

from media.clips import Clip
from recordings.crypto import open_decrypted
from recordings.retention import Retention
from recordings.store import RecordingStore
from rooms.roles import Role
from signaling import protocol as p
from signaling.bot import Bot
from signaling.keys import load_or_create_secret
from signaling.tokens import mint
from tests.integration.server_process import free_port, start_server, wait_healthy


async def test_kill_9_mid_recording_leaves_readable_truncated_files(
    tmp_path: Path, video_clip: Clip, audio_clip: Clip
) -> None:
    data_dir = tmp_path / "data"
    secret = load_or_create_secret(data_dir)
    port = free_port()
    server = start_server(port, data_dir)
    base = f"http://127.0.0.1:{port}"
    bots: list[Bot] = []
    try:
        await wait_healthy(base, server)

        def token(role: Role) -> str:
            return mint(
                secret,
                consultation_id="crash-test-1",
                kind="joint",
                identity=f"id-{role}",
                name="N",
                role=role,
                waiting_room=False,
            )

        doctor = Bot(base, token(Role.doctor), video=video_clip, audio=audio_clip)
        patient = Bot(base, token(Role.patient), video=video_clip, audio=audio_clip)
        bots = [doctor, patient]
        for bot in bots:
            await bot.connect()
        assert await doctor.wait_for(
            lambda: doctor.frames_from(patient.participant_id, "video") > 5, 10
        )
        await doctor.send(p.Record(type="record", action="start"))
        assert await patient.wait_for(
            lambda: any(isinstance(e, p.ConsentRequest) for e in patient.events), 5
        )
        await patient.send(p.Consent(type="consent", granted=True))
        assert await doctor.wait_for(
            lambda: any(
                isinstance(e, p.RecordingState) and e.state == "recording" for e in doctor.events
            ),
            5,
        )
        await asyncio.sleep(3.5)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
    finally:
        for bot in bots:
            await bot.vanish()
        if server.poll() is None:
            server.kill()
            server.wait()

    store = RecordingStore(data_dir)
    report = Retention(store).verify()
    truncated = report.of_kind("truncated")
    assert truncated, report.problems
    assert not report.of_kind("tampered") and not report.of_kind("hash_mismatch")
    key = store.keystore.data_key("crash-test-1")
    decoded_packets = 0
    for path in (Path(x.path) for x in truncated):
        try:
            with av.open(open_decrypted(path, key, allow_truncated=True)) as container:
                decoded_packets += sum(1 for pk in container.demux() if pk.size)
        except av.FFmpegError:
            continue  # an audio file cut before its first cluster may not open
    # ~3 s of two participants' media at 30 fps video / 50 fps audio was readable.
    assert decoded_packets > 100
