"""The recordings API's HTTP hygiene: no caching, no server paths, HSTS under TLS, quiet aborts."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from recordings.bench import record_synthetic_call
from recordings.composer import compose
from recordings.store import RecordingStore
from rooms.roles import Role
from signaling.app import HSTS, create_app, start
from signaling.config import ServerConfig
from signaling.http import recordings_api as api
from signaling.http.tls import self_signed
from signaling.tokens import mint
from tests.integration.conftest import Harness, running


def _record(store: RecordingStore, consultation: str, seconds: float = 1.0) -> str:
    return record_synthetic_call(store, consultation, seconds=seconds)[0].recording


async def test_every_api_response_is_no_store_and_names_no_path(
    harness: Harness, consultation: str
) -> None:
    store = harness.server.recording_store
    recording = _record(store, consultation)
    base = f"{harness.base_url}/api/consultations/{consultation}/recordings"
    doctor = {"Authorization": f"Bearer {harness.token(consultation, Role.doctor)}"}
    patient = {"Authorization": f"Bearer {harness.token(consultation, Role.patient)}"}
    calls = [
        ("GET", base, {}, 401),
        ("GET", base, patient, 403),
        ("GET", base, doctor, 200),
        ("GET", f"{base}/{recording}/compose", doctor, 404),  # no job yet
        ("GET", f"{base}/{recording}/composed", doctor, 404),  # not composed
        ("POST", f"{base}/R20000101T000000Z-000000/compose", doctor, 404),
        ("GET", f"{base}/../../../etc/passwd/composed", doctor, 404),
        ("GET", f"{base}/{recording}/composed?token=garbage", {}, 401),
    ]
    bodies = []
    async with aiohttp.ClientSession() as http:
        for method, url, headers, status in calls:
            async with http.request(method, url, headers=headers) as r:
                assert r.status == status, (method, url, r.status)
                assert r.headers.get("Cache-Control") == "no-store", (method, url)
                bodies.append(await r.text())
        # A recording whose key was destroyed: listed as unreadable, without its key file.
        store.keystore.destroy_key(consultation)
        async with http.get(base, headers=doctor) as r:
            assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
            (info,) = (await r.json())["recordings"]
            assert info["state"] == "unreadable" and info["error"]
            bodies.append(await r.text())
        async with http.get(f"{base}/{recording}/composed", headers=doctor) as r:
            assert r.status == 404
            bodies.append(await r.text())
    data_dir = str(harness.config.data_dir)
    for body in bodies:
        assert data_dir not in body and "/recordings/" not in body and ".key" not in body, body


@pytest.fixture
def composed(config: ServerConfig, consultation: str) -> tuple[ServerConfig, str]:
    """A recording composed beforehand (in this process: the API is not under test here)."""
    store = RecordingStore(config.data_dir)
    recording = _record(store, consultation, seconds=4.0)
    entry = compose(store, consultation, recording)
    # Far more than socket buffers hold, so the server is still writing when the client goes.
    assert entry.size > 1_000_000, entry.size
    return config, recording


async def test_an_aborted_download_is_logged_at_info_at_most(
    composed: tuple[ServerConfig, str],
    consultation: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, recording = composed
    # Small chunks: the response outlives the client by many writes.
    monkeypatch.setattr(api, "READ_SIZE", 2048)
    caplog.set_level(logging.INFO)
    # Served as `serve` serves it (aiohttp's TestServer cancels handlers on disconnect).
    runner = await start(replace(config, port=0))
    try:
        port = runner.addresses[0][1]
        token = mint(
            config.secret,
            consultation_id=consultation,
            kind="joint",
            identity="id-doctor",
            name="N",
            role=Role.doctor,
        )
        path = f"/api/consultations/{consultation}/recordings/{recording}/composed?download=1"
        await asyncio.to_thread(_download_and_abort, port, path, token)

        def ended() -> bool:
            return any(r.levelno >= logging.WARNING for r in caplog.records) or any(
                "left before the end" in r.getMessage() for r in caplog.records
            )

        async with asyncio.timeout(15):
            while not ended():
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # anything logged right after
    finally:
        await runner.cleanup()
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [f"{r.levelname} {r.name}: {r.getMessage()}" for r in loud]
    assert any("left before the end" in r.getMessage() for r in caplog.records)


def _download_and_abort(port: int, path: str, token: str) -> None:
    with socket.socket() as s:
        # A slow reader: the server's writes wait on it, as on a real network.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        s.sendall(request.encode())
        received = b""
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in received and time.monotonic() < deadline:
            received += s.recv(4096)
        assert received.startswith(b"HTTP/1.1 200"), received[:100]
        # Reset, as a browser tab closing mid-download does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_hsts_on_every_response_under_tls_only(
    config: ServerConfig, tmp_path: Path, consultation: str
) -> None:
    cert, key = self_signed(tmp_path / "tls-data", ["127.0.0.1"])
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    paths = [
        "/healthz",
        "/join/not-a-token",
        "/static/app.js",
        "/nowhere",
        f"/api/consultations/{consultation}/recordings",
    ]
    with_tls = replace(config, tls_cert=cert, tls_key=key)
    server = TestServer(create_app(with_tls), host="127.0.0.1")
    await server.start_server(ssl=server_ctx)
    try:
        async with aiohttp.ClientSession() as http:
            for path in paths:
                async with http.get(server.make_url(path), ssl=client_ctx) as r:
                    assert r.headers.get("Strict-Transport-Security") == HSTS, (path, r.status)
    finally:
        await server.close()

    async with running(config) as harness, aiohttp.ClientSession() as http:
        for path in paths:
            async with http.get(harness.base_url + path) as r:
                assert "Strict-Transport-Security" not in r.headers, path
