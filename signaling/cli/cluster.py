"""``teleconsult cluster``: a whole cluster on one machine, to try several nodes.

It starts a private redis-server, two signaling nodes (``serve --redis``) on two ports, each
with one media Worker process, and prints two join links of one consultation, one on each
node. Everything lives in one directory (``--dir``): each node's data directory, the shared
token secret and the logs. Ctrl-C stops it all. Kill a node or a Worker (their pids are
printed) to watch the other take over.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from rooms.consultation import ConsultationKind, new_consultation_id
from rooms.roles import Role
from signaling import tokens
from signaling.keys import SECRET_ENV

START_TIMEOUT_S = 60.0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    c = sub.add_parser(
        "cluster",
        help="run a local cluster: redis-server, two signaling nodes, two media Workers",
    )
    c.set_defaults(handler=run)
    c.add_argument("--dir", type=Path, default=Path(".cluster"), help="where it all lives")
    c.add_argument("--host", default="127.0.0.1", help="address the nodes listen on")
    c.add_argument("--port", type=int, default=8081, help="the first node's port (next: +1)")
    c.add_argument("--redis-port", type=int, default=6390, help="the private Redis's port")


def _secret(directory: Path) -> str:
    """One token secret for every node (each node has its own data directory)."""
    path = directory / "secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


def _wait(check: Callable[[], bool], what: str, processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise SystemExit(f"error: {what}: a process exited; see the logs")
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"error: {what} did not come up in {START_TIMEOUT_S:.0f} s")


def _redis_up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _workers(url: str) -> int:
    """Media Workers registered in Redis (alive: their heartbeat key exists)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return len(client.keys("tc:worker:*"))
    except redis.RedisError:
        return 0
    finally:
        client.close()


def run(args: argparse.Namespace) -> int:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        print("error: redis-server is not installed (Debian: apt-get install redis-server)",
              file=sys.stderr)  # fmt: skip
        return 1
    directory: Path = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = _secret(directory)
    env = {**os.environ, SECRET_ENV: secret}
    redis_url = f"redis://127.0.0.1:{args.redis_port}/0"
    processes: list[subprocess.Popen[bytes]] = []

    def start(command: list[str], log: str) -> subprocess.Popen[bytes]:
        with (directory / log).open("ab") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        processes.append(process)
        return process

    try:
        if _redis_up(args.redis_port):
            print(f"error: something already answers on port {args.redis_port}; choose "
                  "another with --redis-port", file=sys.stderr)  # fmt: skip
            return 1
        start(
            [redis_server, "--port", str(args.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(directory)],
            "redis.log",
        )  # fmt: skip
        _wait(lambda: _redis_up(args.redis_port), "redis-server", processes)
        urls = []
        for i in range(2):
            port = args.port + i
            start(
                [sys.executable, "-m", "signaling.cli", "serve", "--host", args.host,
                 "--port", str(port), "--data-dir", str(directory / f"node{i + 1}"),
                 "--redis", redis_url, "--workers", "1"],
                f"node{i + 1}.log",
            )  # fmt: skip
            urls.append(f"http://{args.host}:{port}")
        for url in urls:
            _wait(lambda url=url: _healthy(url), url, processes)
        _wait(lambda: _workers(redis_url) >= 2, "the media Workers", processes)
        consultation = new_consultation_id()
        print(f"Redis {redis_url} (pid {processes[0].pid}); logs and data in {directory}")
        for i, (url, role, name) in enumerate(
            zip(urls, (Role.doctor, Role.patient), ("Doctor", "Patient"), strict=True)
        ):
            token = tokens.mint(
                secret.encode(),
                consultation_id=consultation,
                kind=ConsultationKind.joint,
                identity=tokens.new_identity(),
                name=name,
                role=role,
                waiting_room=False,
            )
            print(f"node {i + 1}: {url} (pid {processes[i + 1].pid})")
            print(f"  {name.lower()}: {url}/join/{token}")
        print("Ctrl-C stops the cluster.")
        stop = False

        def stopping(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGINT, stopping)
        signal.signal(signal.SIGTERM, stopping)
        while not stop:
            time.sleep(0.5)
        return 0
    finally:
        # Nodes first (each stops its Workers), Redis last.
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=15)
            if process.poll() is None:
                process.kill()
                process.wait()
