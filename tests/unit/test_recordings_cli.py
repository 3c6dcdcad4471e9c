"""The recordings subcommands: verify's exit code, purge honouring holds, compose."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from recordings.bench import record_synthetic_call
from recordings.cli import main
from recordings.crypto import MASTER_KEY_ENV
from recordings.store import RecordingStore

C1, C2 = "consult-cli-001", "consult-cli-002"


def run(capsys: pytest.CaptureFixture[str], data: Path, *argv: str) -> tuple[int, str]:
    code = main(["--data-dir", str(data), *argv])
    return code, capsys.readouterr().out


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(MASTER_KEY_ENV, os.urandom(32).hex())
    store = RecordingStore(tmp_path)
    for c in (C1, C2):
        record_synthetic_call(store, c, seconds=1.0, roles={"Pdoc": "doctor"})
    return tmp_path


def test_list_verify_hold_purge(capsys: pytest.CaptureFixture[str], data: Path) -> None:
    code, out = run(capsys, data, "list", "--json")
    assert code == 0 and sorted(r["consultation"] for r in json.loads(out)) == [C1, C2]
    code, out = run(capsys, data, "verify")
    assert code == 0 and "0 problems" in out

    victim = next((data / "recordings" / "consultations" / C1).rglob("01-video.webm.enc"))
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 1
    victim.write_bytes(raw)
    code, out = run(capsys, data, "verify")
    assert code == 1 and "TAMPERED" in out and str(victim) in out

    assert run(capsys, data, "hold", C2)[0] == 0
    code, out = run(capsys, data, "purge", "--older-than", "0", "--json")
    assert code == 0 and json.loads(out) == {"purged": [C1], "held": [C2], "kept": []}
    assert not (data / "recordings" / "keys" / f"{C1}.key").exists()
    assert run(capsys, data, "release", C2)[0] == 0
    assert json.loads(run(capsys, data, "purge", "--older-than", "0", "--json")[1])["purged"] == [
        C2
    ]


def test_compose_shows_progress(
    capsys: pytest.CaptureFixture[str], data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RecordingStore(data)
    (rid,) = store.recordings(C1)
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    code, out = run(capsys, data, "compose", C1, rid)
    assert code == 0 and "composed composed.mp4.enc" in out
    assert "100.0%" in err.getvalue()


def test_wrong_master_key_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MASTER_KEY_ENV, os.urandom(32).hex())
    code, out = run(capsys, data, "verify", "--json")
    doc = json.loads(out)
    assert code == 1 and {p["kind"] for p in doc["problems"]} == {"wrong_key"}
