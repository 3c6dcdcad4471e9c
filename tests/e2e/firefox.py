"""Debian's Firefox ESR for the browser tests, driven offline over Marionette.

Playwright's Firefox is a patched build it downloads, which cannot be fetched here; Debian's
``firefox-esr`` speaks Marionette, and the ``marionette-driver`` package drives it. What a
call needs in a headless Firefox in a network namespace with only loopback:

- a fake camera and microphone (``media.navigator.streams.fake``) and no prompt for them;
- ``media.peerconnection.ice.loopback``, or it gathers no candidate on 127.0.0.1;
- a remembered camera and microphone permission for the page's origin in the profile's
  permissions database: without one it treats the origin as untrusted and gathers no
  candidates at all where there is no default route (the pref above is not enough).

Marionette's client blocks, so every call runs in a thread: the test's event loop (and a
Playwright Chromium beside it) keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

FIREFOX = shutil.which("firefox-esr") or "/usr/bin/firefox-esr"
START_TIMEOUT_S = 60.0
SCRIPT_TIMEOUT_S = 20.0

needs_firefox = pytest.mark.skipif(
    not Path(FIREFOX).exists(),
    reason="Debian firefox-esr is not installed (make test installs it: apt-get install "
    "firefox-esr)",
)

PREFS: dict[str, Any] = {
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.autoplay.default": 0,
    "media.peerconnection.ice.loopback": True,
    # Quiet, offline and first-run free: nothing reaches for the network or a dialog.
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.disabledForTesting": True,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "extensions.update.enabled": False,
}

# Firefox's permissions database (permissions.sqlite), as version 13 of its schema.
_PERMISSIONS_SCHEMA = """
CREATE TABLE moz_perms (id INTEGER PRIMARY KEY, origin TEXT, type TEXT, permission INTEGER,
  expireType INTEGER, expireTime INTEGER, modificationTime INTEGER);
CREATE TABLE moz_hosts (id INTEGER PRIMARY KEY, host TEXT, type TEXT, permission INTEGER,
  expireType INTEGER, expireTime INTEGER, modificationTime INTEGER, isInBrowserElement INTEGER);
CREATE TABLE moz_origin_interactions (origin TEXT PRIMARY KEY, lastInteractionTime INTEGER);
PRAGMA user_version = 13;
"""
_ALLOW, _NEVER_EXPIRES = 1, 0


def write_profile(profile: Path, origin: str, marionette_port: int) -> None:
    """Prefs, and camera and microphone allowed for ``origin`` for good."""
    prefs = {**PREFS, "marionette.port": marionette_port}
    (profile / "user.js").write_text(
        "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())
    )
    db = sqlite3.connect(profile / "permissions.sqlite")
    try:
        db.executescript(_PERMISSIONS_SCHEMA)
        now_ms = int(time.time() * 1000)
        db.executemany(
            "INSERT INTO moz_perms (origin, type, permission, expireType, expireTime,"
            " modificationTime) VALUES (?, ?, ?, ?, 0, ?)",
            [(origin, kind, _ALLOW, _NEVER_EXPIRES, now_ms) for kind in ("camera", "microphone")],
        )
        db.commit()
    finally:
        db.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FirefoxPage:
    """The one tab of a headless Firefox, with the calls the tests need."""

    def __init__(self, marionette: Any) -> None:
        self._m = marionette

    async def goto(self, url: str) -> None:
        await asyncio.to_thread(self._m.navigate, url)

    async def evaluate(self, expression: str) -> Any:
        """Like Playwright's: ``expression`` is a value or a (possibly async) function.

        It runs in the page's own scope (no sandbox), so it sees what the page's scripts
        put on ``window``.
        """
        script = (
            "const done = arguments[arguments.length - 1];"
            f"const value = ({expression});"
            "Promise.resolve(typeof value === 'function' ? value() : value)"
            ".then(done, (e) => done({__error: String(e)}));"
        )
        result = await asyncio.to_thread(
            self._m.execute_async_script,
            script,
            sandbox=None,
            script_timeout=int(SCRIPT_TIMEOUT_S * 1000),
        )
        if isinstance(result, dict) and "__error" in result:
            raise AssertionError(f"{expression[:80]!r} failed in Firefox: {result['__error']}")
        return result

    async def screenshot(self, path: Path) -> None:
        def save() -> None:
            png = self._m.screenshot(format="binary")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)

        await asyncio.to_thread(save)


def _launch(profile: Path, origin: str) -> tuple[subprocess.Popen[bytes], Any]:
    """Start Firefox on ``profile`` and open a Marionette session to it (blocking)."""
    from marionette_driver.marionette import Marionette

    port = _free_port()
    write_profile(profile, origin, port)
    with (profile / "firefox.log").open("wb") as log:
        proc = subprocess.Popen(
            [FIREFOX, "--marionette", "--headless", "--no-remote", "--profile", str(profile)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MOZ_HEADLESS": "1"},
        )  # fmt: skip
    marionette = Marionette(host="127.0.0.1", port=port, socket_timeout=SCRIPT_TIMEOUT_S * 3)
    try:
        marionette.raise_for_port(timeout=START_TIMEOUT_S)
        marionette.start_session()
    except BaseException:
        _stop(proc)
        raise
    return proc, marionette


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@contextlib.asynccontextmanager
async def firefox(origin: str) -> AsyncIterator[FirefoxPage]:
    """A headless Firefox ESR with a fresh profile that trusts ``origin``'s camera."""
    with tempfile.TemporaryDirectory(prefix="tc-firefox-") as tmp:
        proc, marionette = await asyncio.to_thread(_launch, Path(tmp), origin)
        try:
            yield FirefoxPage(marionette)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(marionette.delete_session)
            await asyncio.to_thread(_stop, proc)
