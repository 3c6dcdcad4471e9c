"""The real server as its own process (``teleconsult serve``), for tests that need one."""

from __future__ import annotations

import asyncio
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    port: int,
    data_dir: Path,
    *args: str,
    log: Path | None = None,
    with_stdout: bool = False,
    open_files: int | None = None,
) -> subprocess.Popen[bytes]:
    """``serve`` on 127.0.0.1:``port``; its stderr (the log) to ``log`` if given, and its
    stdout (the banner, with a join link in it) too if ``with_stdout``.

    ``open_files`` lowers the soft RLIMIT_NOFILE the server starts with, as a distribution's
    default of 1024 does.
    """
    command = [sys.executable, "-m", "signaling.cli", "serve", "--port", str(port)]
    command += ["--data-dir", str(data_dir), *args]
    if open_files is not None:
        command = ["sh", "-c", f"ulimit -Sn {open_files} && exec {shlex.join(command)}"]
    if log is None:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with log.open("wb") as out:
        stdout = out if with_stdout else subprocess.DEVNULL
        return subprocess.Popen(command, stdout=stdout, stderr=out)


async def wait_healthy(
    url: str, process: subprocess.Popen[bytes] | None = None, timeout_s: float = 20.0
) -> None:
    """Until ``url``/healthz answers; fails at once if ``process`` exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise AssertionError(f"the server exited with {process.returncode}")
            try:
                async with http.get(url + "/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("the server did not come up")


def stop_server(server: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int:
    """SIGTERM (a clean shutdown, logs flushed), then SIGKILL if it hangs."""
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return server.returncode
