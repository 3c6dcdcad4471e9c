"""Fixtures of the browser tests: the pages alone on an in-process aiohttp app
(``pages_client``), and the real server, started once per test module in its own process
with its own data directory (so one module's recordings never meet another's)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from signaling.config import ServerConfig
from signaling.http import appkeys
from signaling.http.pages import setup_pages
from tests import roaming
from tests.e2e.helpers import (
    CHROMIUM,
    HEALTH_TIMEOUT_S,
    PAGES_SECRET,
    REPO,
    RunningServer,
    chromium,
    free_port,
)


@pytest.fixture
async def pages_client(tmp_path: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The join page and static files only: no WebSocket, no media."""
    app = web.Application()
    app[appkeys.CONFIG] = ServerConfig(data_dir=tmp_path, secret=PAGES_SECRET)
    setup_pages(app)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from serve(tmp_path_factory)


def serve(tmp_path_factory: pytest.TempPathFactory, *args: str) -> Iterator[RunningServer]:
    """The real server with ``serve``'s ``args``, until the generator is closed."""
    if importlib.util.find_spec("signaling.app") is None:
        pytest.skip("signaling/app.py has not landed yet")
    data_dir = tmp_path_factory.mktemp("server-data")
    port = free_port()
    log = data_dir / "server.log"
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Both read from the data dir: the server's secret and master key, and the test's reads.
    env.pop("TELECONSULT_SECRET", None)
    env.pop("TELECONSULT_MASTER_KEY", None)
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "signaling.cli", "serve",
                "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir), *args,
            ],
            cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    running = RunningServer(base, data_dir, log, proc)
    try:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{running.log_tail()}")
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no /healthz within {HEALTH_TIMEOUT_S}s:\n{running.log_tail()}")
            time.sleep(0.2)
        yield running
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# A page in a network namespace of its own (tests/roaming.py), for the network-switch and
# weak-link tests: the link, a server reachable from there, and Chromium running there.


@pytest.fixture
def link() -> Iterator[roaming.RoamingLink]:
    with roaming.roaming_link() as link:
        yield link


@pytest.fixture
def roaming_server(
    link: roaming.RoamingLink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    running = serve(
        tmp_path_factory,
        "--host", "0.0.0.0", "--ice-address", "127.0.0.1", "--ice-address", link.here,
    )  # fmt: skip
    yield next(running)
    running.close()


def far_chromium(tmp: Path, link: roaming.RoamingLink, server: RunningServer) -> Any:
    """Chromium in the far namespace. Its page comes from http://<here>:<port>, which is not
    a secure context, and the camera is only given to one: that origin is declared secure
    (what HTTPS gives a real deployment)."""
    origin = server.base_url.replace("127.0.0.1", link.here, 1)
    there = tmp / "chromium-there"
    there.write_text(f'#!/bin/sh\nexec {" ".join(link.there_prefix)} {CHROMIUM} "$@"\n')
    there.chmod(0o755)
    return chromium([f"--unsafely-treat-insecure-origin-as-secure={origin}"], executable=str(there))
