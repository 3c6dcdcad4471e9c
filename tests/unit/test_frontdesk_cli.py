"""``teleconsult sites|staff ...`` and the first admin that ``serve`` prints on first start."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import sys
import types
from pathlib import Path

import pytest

from recordings.crypto import load_or_create_master_key
from rooms.records.database import Database, resolve_url
from rooms.records.frontdesk import FrontDesk
from signaling.cli.main import main
from signaling.config import ServerConfig

FIRST = re.compile(r"as 'admin' with the password (\S+)$", re.M)
PASSWORD = "a long enough password"


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("TELECONSULT_SECRET", raising=False)
    monkeypatch.delenv("TELECONSULT_MASTER_KEY", raising=False)
    monkeypatch.delenv("TELECONSULT_DATABASE_URL", raising=False)
    monkeypatch.setenv("TELECONSULT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def fake_app(monkeypatch: pytest.MonkeyPatch) -> list[ServerConfig]:
    started: list[ServerConfig] = []
    module = types.ModuleType("signaling.app")
    module.run = started.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "signaling.app", module)
    return started


def _login(data_dir: Path, username: str, password: str) -> str:
    async def run() -> str:
        database = Database(resolve_url(data_dir))
        try:
            desk = FrontDesk.build(database, load_or_create_master_key(data_dir))
            return (await desk.authenticator.login(username, password, None)).outcome.value
        finally:
            await database.close()

    return asyncio.run(run())


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


def test_serve_prints_a_first_admin_once_and_never_logs_the_password(
    fake_app: list[ServerConfig],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    data_dir: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    assert main(["serve"]) == 0
    out = capsys.readouterr().out
    found = FIRST.search(out)
    assert found, out
    password = found.group(1)
    assert "http://127.0.0.1:8080/login" in out and "staff passwd admin" in out
    assert password not in caplog.text
    assert _login(data_dir, "admin", password) == "ok"
    assert main(["serve"]) == 0  # the second start: there is staff, nothing printed
    assert FIRST.search(capsys.readouterr().out) is None
    assert password not in caplog.text


def test_sites_and_staff_from_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    assert main(["db", "upgrade"]) == 0
    capsys.readouterr()
    assert main(["sites", "add", "--kind", "township_health_centre", "--name", "Hetian"]) == 0
    thc = capsys.readouterr().out.strip()
    assert main(["sites", "add", "--kind", "expert_hospital", "--name", "Provincial"]) == 0
    hosp = capsys.readouterr().out.strip()
    assert main(["sites", "departments", hosp, "--add", "Cardiology"]) == 0
    cardio = capsys.readouterr().out.strip()
    assert main(["sites", "departments", hosp]) == 0
    assert capsys.readouterr().out == f"{cardio}\tCardiology\n"
    assert main(["sites", "partner", "--requester", thc, "--department", cardio]) == 0
    assert capsys.readouterr().out.startswith("ptn_")
    assert main(["sites", "list"]) == 0
    assert f"{thc}\ttownship_health_centre\tHetian" in capsys.readouterr().out

    _stdin(monkeypatch, PASSWORD + "\n")
    assert main(["staff", "add", "--username", "Dr-Wang", "--name", "王医生", "--role",
                 "doctor", "--site", thc, "--password-stdin"]) == 0  # fmt: skip
    staff_id = capsys.readouterr().out.strip()
    assert staff_id.startswith("stf_")
    assert main(["staff", "list", "--site", thc]) == 0
    listing = capsys.readouterr().out
    assert f"{staff_id}\tdr-wang\tdoctor\tactive" in listing and "王医生" not in listing
    assert _login(data_dir, "dr-wang", PASSWORD) == "ok"

    _stdin(monkeypatch, PASSWORD + "\n")
    assert main(["staff", "add", "--username", "dr-wang", "--name", "x", "--role", "nurse",
                 "--site", thc, "--password-stdin"]) == 2  # fmt: skip
    assert "taken" in capsys.readouterr().err
    _stdin(monkeypatch, "short\n")
    assert main(["staff", "add", "--username", "n2", "--name", "x", "--site", thc,
                 "--password-stdin"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "at least 10" in err and "short" not in err

    _stdin(monkeypatch, "the next password\n")
    assert main(["staff", "passwd", "dr-wang", "--password-stdin"]) == 0
    assert _login(data_dir, "dr-wang", "the next password") == "ok"
    assert main(["staff", "disable", "dr-wang"]) == 0
    assert _login(data_dir, "dr-wang", "the next password") == "disabled"
    assert main(["staff", "enable", "dr-wang"]) == 0
    assert main(["staff", "unlock", "dr-wang"]) == 0
    assert main(["staff", "disable", "nobody-here"]) == 2
    assert main(["sites", "partner", "--requester", thc, "--department", cardio, "--end"]) == 0
    assert main(["sites", "departments", "site_0000000000000000"]) == 2
    out = capsys.readouterr().out
    assert PASSWORD not in out and "the next password" not in out
