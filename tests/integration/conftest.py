"""An in-process server on loopback, tokens for it, and bots that join it."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from media.clips import Clip, opus_clip, vp8_clip
from media.config import IceAddress, MediaConfig
from media.ice import restrict_host_addresses
from rooms.consultation import ConsultationKind, new_consultation_id
from rooms.roles import Role
from signaling.app import SERVER, create_app
from signaling.bot import Bot
from signaling.config import ServerConfig
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

    def token(
        self,
        consultation_id: str,
        role: Role = Role.expert,
        name: str = "Test Person",
        kind: ConsultationKind = ConsultationKind.joint,
        ttl_s: int = 600,
        now: float | None = None,
    ) -> str:
        return mint(
            self.config.secret,
            consultation_id=consultation_id,
            kind=kind,
            identity="id-" + secrets.token_hex(4),
            name=name,
            role=role,
            ttl_s=ttl_s,
            now=now,
        )

    def bot(self, token: str, **kwargs: object) -> Bot:
        bot = Bot(self.base_url, token, **kwargs)  # type: ignore[arg-type]
        self.bots.append(bot)
        return bot


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(
        data_dir=tmp_path,
        secret=secrets.token_bytes(32),
        media=MediaConfig(answer_timeout_s=5.0),
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


Factory = Callable[..., Bot]
