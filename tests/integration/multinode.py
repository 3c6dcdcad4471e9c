"""Two signaling nodes (``teleconsult serve --redis``) on two ports, each starting one media
Worker, on one redis-server: a cluster as real processes for the tests of several nodes.

The nodes share the token secret (``TELECONSULT_SECRET``) and Redis, nothing else: each has
its own data directory (its audit log, records database and recordings), as on two machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from media.clips import Clip
from media.registry import Registry
from rooms.roles import Role
from signaling.bot import Bot
from signaling.nodes import Nodes
from signaling.tokens import mint
from tests.integration.server_process import free_port, start_server, stop_server, wait_healthy


@dataclass
class Node:
    port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    secret: str
    redis_url: str
    redis: aioredis.Redis
    nodes: list[Node]
    bots: list[Bot] = field(default_factory=list)
    # TELECONSULT_SECRET as it was before the cluster set it (for its processes): restored.
    previous_secret: str | None = None

    @property
    def registry(self) -> Registry:
        return Registry(self.redis)

    @property
    def directory(self) -> Nodes:
        return Nodes(self.redis, "test")

    def bot(self, node: Node, consultation: str, role: Role, **media: Clip) -> Bot:
        token = mint(
            self.secret.encode(),
            consultation_id=consultation,
            kind="joint",
            identity=f"{role}-{len(self.bots)}",
            name="N",
            role=role,
            waiting_room=False,
        )
        frames: list[float] = []
        bot = Bot(node.url, token, on_frame=lambda kind, who, data, now: frames.append(now)
                  if kind == "video" else None, **media)  # fmt: skip
        bot.video_times = frames  # type: ignore[attr-defined]
        self.bots.append(bot)
        return bot

    async def owner(self, consultation: str) -> Node:
        """The node whose process owns the consultation's Room."""
        owner = await self.directory.owner(consultation)
        assert owner is not None, "nobody owns it"
        pid = await self.directory.pid(owner)
        for node in self.nodes:
            if node.process is not None and node.process.pid == pid:
                return node
        raise AssertionError(f"no node of this cluster has pid {pid}")

    def kill(self, node: Node) -> None:
        assert node.process is not None
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait()
        # Its Worker child lives on (a Worker is its own process): it is a media Worker of
        # the cluster like any other, and it goes when its parent's test is over.

    async def close(self) -> None:
        for bot in self.bots:
            await bot.close()
        workers = []
        with contextlib.suppress(RedisError, OSError):
            for worker_id in await self.registry.live_workers():
                workers.append(await self.registry.pid(worker_id))
        for node in self.nodes:
            if node.process is not None:
                stop_server(node.process)
        # The Workers of a node killed with -9 outlive it (their own processes).
        for pid in workers:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        await self.redis.aclose()
        if self.previous_secret is None:
            os.environ.pop("TELECONSULT_SECRET", None)
        else:
            os.environ["TELECONSULT_SECRET"] = self.previous_secret


def start_node(node: Node, redis_url: str, *extra: str) -> None:
    node.process = start_server(
        node.port, node.data_dir, "--redis", redis_url, "--workers", "1", *extra, log=node.log
    )


async def start_cluster(tmp_path: Path, redis_url: str, count: int = 2) -> Cluster:
    secret = secrets.token_hex(24)
    previous = os.environ.get("TELECONSULT_SECRET")
    # The nodes (and ``invite``) inherit it: one secret, as several machines are configured.
    os.environ["TELECONSULT_SECRET"] = secret
    redis = aioredis.Redis.from_url(redis_url)
    await redis.flushdb()
    nodes = [
        Node(free_port(), tmp_path / f"node{i}", tmp_path / f"node{i}.log") for i in range(count)
    ]
    cluster = Cluster(secret, redis_url, redis, nodes, previous_secret=previous)
    try:
        for node in nodes:
            start_node(node, redis_url)
        for node in nodes:
            await wait_healthy(node.url, node.process, timeout_s=30)
        async with asyncio.timeout(30):
            while len(await cluster.registry.live_workers()) < count:
                await asyncio.sleep(0.2)
    except BaseException:
        await cluster.close()
        raise
    return cluster


@dataclass
class OwnRedis:
    """A redis-server of one test, on a fixed port, that the test can restart."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe is not None
        command = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self.workdir)]  # fmt: skip
        with (self.workdir / "redis.log").open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not come up")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
