"""The audit log on real files: what verify catches, what start-up recovers, write order."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from recordings.crypto import MASTER_KEY_ENV, load_or_create_master_key
from signaling.audit.chain import GENESIS, canonical, checkpoints_path
from signaling.audit.log import AuditLog
from signaling.audit.verify import AuditReport, verify
from signaling.cli.main import main

NAME = "Zhao Meiling"


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "audit.log"


def _fill(path: Path, key: bytes, n: int = 6, **kwargs: Any) -> AuditLog:
    audit = AuditLog(path, key, **kwargs)
    for i in range(n):
        audit.record("join", consultation="c-123456", participant=f"p{i}", identity=f"u-{i}")
    return audit


def _closed_log(path: Path, key: bytes, n: int = 6) -> list[dict[str, Any]]:
    _fill(path, key, n).close()
    return _read(path)


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _write(path: Path, entries: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(canonical(e) + b"\n" for e in entries))


def _kinds(report: AuditReport) -> list[str]:
    return [f.kind for f in report.findings]


def _wait(predicate: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def test_an_untouched_log_verifies(path: Path, key: bytes) -> None:
    entries = _closed_log(path, key)
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6]
    report = verify(path, key)
    assert report.ok, report.findings
    assert (report.entries, report.head.seq, report.checkpoints) == (6, 6, 1)
    # Nothing secret in the log: the MAC key is derived, never written.
    assert key.hex() not in path.read_text() + checkpoints_path(path).read_text()


def test_truncating_the_end_is_reported(path: Path, key: bytes) -> None:
    entries = _closed_log(path, key)
    _write(path, entries[:-2])
    report = verify(path, key)
    assert _kinds(report) == ["truncated"], report.findings


def test_an_emptied_log_is_reported(path: Path, key: bytes) -> None:
    _closed_log(path, key)
    path.write_bytes(b"")
    assert _kinds(verify(path, key)) == ["truncated"]


@pytest.mark.parametrize("attacker_key", [None, b"a guessed key"], ids=["unkeyed", "wrong-key"])
def test_deleting_an_entry_and_recomputing_the_chain_is_reported(
    path: Path, key: bytes, attacker_key: bytes | None
) -> None:
    entries = _closed_log(path, key)
    del entries[2]
    prev = GENESIS
    for seq, entry in enumerate(entries, start=1):
        entry["seq"] = seq
        body = canonical({k: v for k, v in entry.items() if k != "mac"})
        message = prev.encode() + b"\n" + body
        if attacker_key is None:
            entry["mac"] = hashlib.sha256(message).hexdigest()
        else:
            entry["mac"] = hmac.new(attacker_key, message, hashlib.sha256).hexdigest()
        prev = entry["mac"]
    _write(path, entries)
    assert "broken" in _kinds(verify(path, key))
    # The MACs alone catch it, with the checkpoints gone too.
    checkpoints_path(path).unlink()
    report = verify(path, key)
    assert report.findings and set(_kinds(report)) == {"broken"}
    assert report.findings[0].line == 1


def test_deleting_an_entry_is_reported_at_that_place(path: Path, key: bytes) -> None:
    entries = _closed_log(path, key)
    del entries[2]
    _write(path, entries)
    report = verify(path, key)
    assert [(f.kind, f.line) for f in report.findings] == [("broken", 3)]


def test_appending_a_forged_line_is_reported(path: Path, key: bytes) -> None:
    entries = _closed_log(path, key)
    forged = {**entries[-1], "seq": 7, "action": "recording_downloaded", "at": time.time()}
    forged["mac"] = hashlib.sha256(b"anything").hexdigest()
    _write(path, [*entries, forged])
    report = verify(path, key)
    assert [(f.kind, f.line) for f in report.findings] == [("broken", 7)]


def test_inserting_a_forged_line_is_one_finding(path: Path, key: bytes) -> None:
    entries = _closed_log(path, key)
    forged = {**entries[1], "seq": 3, "participant": "p-forged"}
    _write(path, [*entries[:2], forged, *entries[2:]])
    report = verify(path, key)
    assert [(f.kind, f.line) for f in report.findings] == [("broken", 3)]


def test_editing_a_field_is_reported(path: Path, key: bytes) -> None:
    entries = _closed_log(path, key)
    entries[3]["identity"] = "u-someone-else"
    _write(path, entries)
    report = verify(path, key)
    # Only the edited line: the chain is checked on from the entry as found.
    assert [(f.kind, f.line) for f in report.findings] == [("broken", 4)]


def test_a_checkpoint_that_does_not_match_the_log_is_reported(
    tmp_path: Path, path: Path, key: bytes
) -> None:
    _closed_log(path, key, n=4)
    # Another chain, valid under the same key, swapped in for this one: every MAC holds,
    # only the checkpoint knows it is not the log that was written here.
    other = tmp_path / "other" / "audit.log"
    _closed_log(other, key, n=6)
    os.replace(other, path)
    report = verify(path, key)
    assert [(f.kind, f.file, f.line) for f in report.findings] == [
        ("checkpoint_mismatch", "audit.checkpoints", 1)
    ]


def test_an_edited_checkpoint_is_reported(path: Path, key: bytes) -> None:
    _closed_log(path, key)
    cp = checkpoints_path(path)
    record = json.loads(cp.read_bytes())
    record["seq"] = 3
    cp.write_bytes(canonical(record) + b"\n")
    assert _kinds(verify(path, key)) == ["bad_checkpoint"]


def test_a_checkpoint_every_n_entries_and_after_t_seconds(path: Path, key: bytes) -> None:
    audit = AuditLog(path, key, checkpoint_every=3, checkpoint_interval_s=3600)
    cp = checkpoints_path(path)
    for i in range(2):
        audit.record("join", participant=f"p{i}")
        assert audit.flush()
    audit.record("join", participant="p2")
    assert audit.flush()
    assert _wait(lambda: cp.exists() and len(cp.read_bytes().splitlines()) == 1)
    assert json.loads(cp.read_bytes())["seq"] == 3
    audit.close()

    timed = AuditLog(path, key, checkpoint_every=1000, checkpoint_interval_s=0.2)
    timed.record("leave", participant="p0")
    assert _wait(lambda: len(cp.read_bytes().splitlines()) == 2)
    assert json.loads(cp.read_bytes().splitlines()[-1])["seq"] == timed.head.seq == 4
    timed.close()
    report = verify(path, key)
    assert report.ok and report.checkpoints == 2


def test_entries_are_on_disk_in_call_order_under_concurrent_callers(path: Path, key: bytes) -> None:
    audit = AuditLog(path, key, checkpoint_every=50)
    threads, per_thread = 8, 250
    start = threading.Barrier(threads)
    returned: dict[int, list[int]] = {t: [] for t in range(threads)}

    def caller(t: int) -> None:
        start.wait(timeout=10)
        for i in range(per_thread):
            returned[t].append(audit.record("join", participant=f"t{t}", i=i)["seq"])

    workers = [threading.Thread(target=caller, args=(t,)) for t in range(threads)]
    # Threads switch every few microseconds instead of 5 ms, so a race shows up.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=30)
    finally:
        sys.setswitchinterval(switch)
    assert not any(w.is_alive() for w in workers)
    audit.close()

    entries = _read(path)
    assert [e["seq"] for e in entries] == list(range(1, threads * per_thread + 1))
    for t in range(threads):
        mine = [e for e in entries if e["participant"] == f"t{t}"]
        # Each caller's entries in the order it made the calls, at the seq each call got.
        assert [e["i"] for e in mine] == list(range(per_thread))
        assert [e["seq"] for e in mine] == returned[t]
    assert verify(path, key).ok


def test_record_refuses_fields_the_log_sets(path: Path, key: bytes) -> None:
    audit = AuditLog(path, key)
    for field in ("seq", "mac", "at", "action"):
        with pytest.raises(ValueError):
            audit.record("join", **{field: 1})
    audit.close()
    assert not path.read_bytes()


def test_a_torn_last_line_is_moved_aside_and_recorded(path: Path, key: bytes) -> None:
    audit = _fill(path, key, 5)
    audit.flush()
    # A power cut mid-write: no checkpoint yet (killed, not closed), half a line on disk.
    torn = b'{"action":"leave","at":17'
    with path.open("ab") as f:
        f.write(torn)
    recovered = AuditLog(path, key)
    recovered.close()
    (aside,) = path.parent.glob("audit.log.torn-*")
    assert aside.read_bytes() == torn
    assert oct(aside.stat().st_mode & 0o777) == "0o600"
    entries = _read(path)
    assert entries[5]["action"] == "audit_recovered"
    assert entries[5]["seq"] == 6
    assert (entries[5]["line"], entries[5]["bytes"]) == (6, len(torn))
    assert entries[5]["moved_to"] == aside.name
    assert verify(path, key).ok


def test_a_last_line_that_is_not_json_is_moved_aside(path: Path, key: bytes) -> None:
    _fill(path, key, 3).flush()
    with path.open("ab") as f:
        f.write(b"\x00" * 40 + b"\n")
    assert _kinds(verify(path, key)) == ["torn"]
    AuditLog(path, key).close()
    assert verify(path, key).ok
    assert [e["action"] for e in _read(path)][-1] == "audit_recovered"


def test_a_torn_checkpoint_line_is_moved_aside(path: Path, key: bytes) -> None:
    _closed_log(path, key)
    with checkpoints_path(path).open("ab") as f:
        f.write(b'{"at":1,"mac":"ab')
    AuditLog(path, key).close()
    (aside,) = path.parent.glob("audit.checkpoints.torn-*")
    assert aside.read_bytes() == b'{"at":1,"mac":"ab'
    recovered = [e for e in _read(path) if e["action"] == "audit_recovered"]
    assert [e["file"] for e in recovered] == ["audit.checkpoints"]
    assert verify(path, key).ok


def test_a_chain_broken_in_the_middle_is_recorded_and_carried_on(
    path: Path, key: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    entries = _closed_log(path, key)
    entries[2]["identity"] = NAME  # an edit that also plants a name
    _write(path, entries)
    with caplog.at_level(logging.ERROR, logger="signaling.audit.log"):
        audit = AuditLog(path, key)
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    audit.record("join", participant="p-after")
    audit.close()
    after = _read(path)[6:]
    assert [e["action"] for e in after] == ["audit_chain_broken", "join"]
    assert after[0]["problems"] == 1
    assert after[0]["first"] == [{"kind": "broken", "file": "audit.log", "line": 3}]
    assert [e["seq"] for e in after] == [7, 8]
    # The finding stays, and nothing after it is reported: the chain went on from seq 6.
    report = verify(path, key)
    assert [(f.kind, f.line) for f in report.findings] == [("broken", 3)]
    # What the log adds about the broken line never copies what the line holds.
    assert NAME not in caplog.text
    assert all(NAME not in json.dumps(e) for e in after)


def test_a_log_of_the_unkeyed_version_is_rotated_aside(path: Path, key: bytes) -> None:
    prev, lines = GENESIS, []
    for i in range(3):
        entry: dict[str, Any] = {"at": 1.0 + i, "action": "join", "participant": f"p{i}"}
        entry["prev"] = prev
        entry["hash"] = hashlib.sha256(canonical(entry)).hexdigest()
        prev = entry["hash"]
        lines.append(entry)
    _write(path, lines)

    AuditLog(path, key).close()
    (old,) = path.parent.glob("audit.log.unkeyed-*")
    assert _read(old) == lines
    (first,) = _read(path)
    assert first["action"] == "audit_rotated" and first["seq"] == 1
    assert first["previous_file"] == old.name
    assert first["previous_last_hash"] == prev
    assert (first["previous_entries"], first["previous_first_break"]) == (3, None)
    assert verify(path, key).ok


def test_verify_reports_an_unkeyed_log(path: Path, key: bytes) -> None:
    entry: dict[str, Any] = {"at": 1.0, "action": "join", "prev": GENESIS}
    entry["hash"] = hashlib.sha256(canonical(entry)).hexdigest()
    _write(path, [entry])
    assert _kinds(verify(path, key)) == ["unkeyed"]


def test_cli_audit_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    data_dir = tmp_path / "data"
    audit = AuditLog.open(data_dir)
    for i in range(4):
        audit.record("join", participant=f"p{i}")
    audit.close()
    assert main(["audit", "verify", "--data-dir", str(data_dir)]) == 0
    assert "4 entries, head seq 4, 1 checkpoints, 0 problems" in capsys.readouterr().out

    log = data_dir / "audit.log"
    entries = _read(log)
    entries[1]["participant"] = "p-edited"
    _write(log, entries)
    assert main(["audit", "verify", "--data-dir", str(data_dir)]) == 1
    out = capsys.readouterr().out
    assert "BROKEN: audit.log:2:" in out and "1 problems" in out

    # No master key: an error, not a new key that would fail every entry.
    assert main(["audit", "verify", "--data-dir", str(tmp_path / "elsewhere")]) == 1
    assert "no master key" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere" / "master.key").exists()
    assert load_or_create_master_key(data_dir)  # the real one is still there
