"""Fixtures shared by every test level."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, never the shared 6379; no persistence."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    workdir: Path = tmp_path_factory.mktemp("redis")
    # The free port can be taken between probing and binding: try a few.
    for _ in range(5):
        port = _free_port()
        log = (workdir / f"redis-{port}.log").open("wb")
        proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None and not _pings(port):
            time.sleep(0.05)
        if proc.poll() is None and _pings(port):
            break
        proc.kill()
        proc.wait()
        log.close()
    else:
        pytest.fail(f"redis-server did not answer PING; see the logs in {workdir}")
    try:
        yield RedisServer("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@dataclass(frozen=True)
class PostgresServer:
    socket_dir: Path
    port: int
    user: str = "tc"

    def url(self, database: str) -> str:
        return (
            f"postgresql+asyncpg://{self.user}@/{database}?host={self.socket_dir}&port={self.port}"
        )


def _postgres_bin(name: str) -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else shutil.which(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL on a Unix socket only (no TCP), never the machine's own instance.

    initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user, in
    a directory of its own outside pytest's root-only temporary tree.
    """
    import os
    import tempfile

    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="tc-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        for path in (root, sockets):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_postgres, initdb, "-D", str(data), "-A", "trust", "-U", "tc", "--no-sync"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port = _free_port()
    options = f"-k {sockets} -p {port} -c listen_addresses='' -c fsync=off"
    subprocess.run(
        [*as_postgres, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w",
         "start"],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield PostgresServer(sockets, port)
    finally:
        subprocess.run(
            [*as_postgres, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def records_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty records database URL, on each backend: the contract suites run on both."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'records.db'}"
        return
    import asyncio
    import secrets

    import asyncpg

    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = "t_" + secrets.token_hex(6)

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(
            host=str(server.socket_dir), port=server.port, user=server.user, database="postgres"
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    try:
        yield server.url(name)
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


# ------------------------------------------------------------------ coturn


@dataclass(frozen=True)
class CoturnServer:
    port: int
    # The shared secret of coturn's REST scheme (use-auth-secret), fresh for each server.
    secret: str

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}"


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[CoturnServer]:
    """A real coturn on loopback (UDP and TCP on one port), REST credentials only."""
    if shutil.which("turnserver") is None:
        pytest.skip("coturn is not installed (apt-get install coturn; make test does)")
    port, secret = _free_port(), secrets.token_hex(32)
    command = [
        "turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "--use-auth-secret",
        f"--static-auth-secret={secret}",
        "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
        "--min-port=49160", "--max-port=49260",
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
        yield CoturnServer(port, secret)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
