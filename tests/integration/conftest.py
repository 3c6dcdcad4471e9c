"""An in-process server on loopback, tokens for it, and bots that join it."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiortc.codecs.opus
import aiortc.codecs.vpx
import aiortc.rtcrtpreceiver
import pytest
from aiohttp.test_utils import TestServer

from media.clips import Clip, opus_clip, vp8_clip
from media.config import IceAddress, MediaConfig
from media.ice import restrict_host_addresses
from media.local import LocalWorkerClient
from media.worker import Worker
from recordings.catalog import Catalog, RecordingInfo
from rooms.consultation import ConsultationKind, new_consultation_id
from rooms.roles import Role
from signaling.app import SERVER, create_app
from signaling.bot import Bot
from signaling.config import ServerConfig
from signaling.room.room import Room
from signaling.server import Server
from signaling.tokens import mint


@pytest.fixture(scope="session", autouse=True)
def loopback_candidates() -> None:
    """Bots gather ICE candidates on 127.0.0.1 only, like the Worker: aioice skips loopback
    by default, and process-wide is the only way it can be told (media/ice.py)."""
    restrict_host_addresses((IceAddress("127.0.0.1"),))


@pytest.fixture(scope="session")
def video_clip() -> Clip:
    return vp8_clip(seconds=10)


@pytest.fixture(scope="session")
def audio_clip() -> Clip:
    return opus_clip(seconds=10)


class Harness:
    def __init__(self, server: TestServer, config: ServerConfig) -> None:
        self.http = server
        self.config = config
        self.base_url = str(server.make_url("")).rstrip("/")
        self.bots: list[Bot] = []

    @property
    def server(self) -> Server:
        return self.http.app[SERVER]

    @property
    def worker(self) -> Worker:
        """The in-process media Worker behind the server's WorkerClient, to look inside."""
        client = self.server.worker
        assert isinstance(client, LocalWorkerClient)
        return client.worker

    def room(self, consultation_id: str) -> Room | None:
        return self.server.rooms.get(consultation_id)

    def token(
        self,
        consultation_id: str,
        role: Role = Role.expert,
        name: str = "Test Person",
        kind: ConsultationKind = ConsultationKind.joint,
        ttl_s: int = 600,
        now: float | None = None,
        waiting_room: bool | None = False,
    ) -> str:
        """A join token. Pre-admitted unless ``waiting_room`` says otherwise (None: by role,
        as a real invitation is): the waiting room has tests of its own."""
        return mint(
            self.config.secret,
            consultation_id=consultation_id,
            kind=kind,
            identity="id-" + secrets.token_hex(4),
            name=name,
            role=role,
            ttl_s=ttl_s,
            now=now,
            waiting_room=waiting_room,
        )

    def bot(self, token: str, **kwargs: object) -> Bot:
        bot = Bot(self.base_url, token, **kwargs)  # type: ignore[arg-type]
        self.bots.append(bot)
        return bot

    async def closed_recordings(
        self, consultation_id: str, timeout_s: float = 30.0
    ) -> list[RecordingInfo]:
        """The consultation's recordings once every one has been closed on disk.

        A stop is announced at once; the writer thread then writes what it has queued and
        the final manifest, so a manifest still in state "recording" is not done yet.
        """
        catalog = Catalog(self.server.recording_store)
        deadline = time.monotonic() + timeout_s
        while True:
            infos = catalog.list(consultation_id)
            if all(info.state != "recording" for info in infos):
                return infos
            assert time.monotonic() < deadline, f"still being written: {infos}"
            await asyncio.sleep(0.05)


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(
        data_dir=tmp_path,
        secret=secrets.token_bytes(32),
        media=MediaConfig(answer_timeout_s=5.0),
        # A vanished client's session is held this long for a resume (20 s in production);
        # short here so tests of what vanishing leaves behind need not wait.
        resume_grace_s=1.0,
    )


@contextlib.asynccontextmanager
async def running(config: ServerConfig) -> AsyncIterator[Harness]:
    """The app on a free loopback port; every bot made through it is closed after."""
    server = TestServer(create_app(config), host="127.0.0.1")
    await server.start_server()
    harness = Harness(server, config)
    try:
        yield harness
    finally:
        for bot in harness.bots:
            await bot.close()
        await server.close()


@pytest.fixture
async def harness(config: ServerConfig) -> AsyncIterator[Harness]:
    async with running(config) as harness:
        yield harness


@pytest.fixture
def consultation() -> str:
    return new_consultation_id()


class Counter:
    def __init__(self) -> None:
        self.calls = 0


@pytest.fixture
def decoder_calls(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts every decoder aiortc creates and every frame any aiortc encoder encodes."""
    counter = Counter()
    real_get_decoder = aiortc.rtcrtpreceiver.get_decoder

    def counting_get_decoder(codec):  # type: ignore[no-untyped-def]
        counter.calls += 1
        return real_get_decoder(codec)

    monkeypatch.setattr(aiortc.rtcrtpreceiver, "get_decoder", counting_get_decoder)
    for cls in (aiortc.codecs.vpx.Vp8Encoder, aiortc.codecs.opus.OpusEncoder):
        real_encode = cls.encode

        def counting_encode(self, *args, _real=real_encode, **kwargs):  # type: ignore[no-untyped-def]
            counter.calls += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(cls, "encode", counting_encode)
    return counter


Factory = Callable[..., Bot]
