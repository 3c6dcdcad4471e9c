"""Every directory the server or the CLI creates under the data dir is 0700."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from recordings.bench import record_synthetic_call
from recordings.crypto import make_private_dir
from recordings.retention import Retention
from recordings.store import RecordingStore
from signaling.cli.main import main
from signaling.http.tls import self_signed


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    # The usual 022: mkdir(parents=True) then makes missing parents 0755.
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("TELECONSULT_SECRET", raising=False)
    monkeypatch.delenv("TELECONSULT_MASTER_KEY", raising=False)
    return tmp_path / "data"


def _modes(root: Path) -> dict[str, str]:
    dirs = [root, *(p for p in root.rglob("*") if p.is_dir())]
    return {str(d.relative_to(root)): oct(stat.S_IMODE(d.stat().st_mode)) for d in dirs}


def _all_private(root: Path) -> None:
    modes = _modes(root)
    assert {d: m for d, m in modes.items() if m != "0o700"} == {}
    assert len(modes) > 1


@pytest.mark.parametrize("first", ["record", "hold", "cli-hold"])
def test_recordings_directories_are_private_whatever_creates_them_first(
    data_dir: Path, first: str
) -> None:
    consultation = "private-dirs-1"
    store = RecordingStore(data_dir)
    if first == "record":
        record_synthetic_call(store, consultation, seconds=0.5)
    elif first == "hold":
        Retention(store).hold(consultation, "complaint")
    else:
        argv = ["recordings", "--data-dir", str(data_dir), "hold", consultation]
        assert main([*argv, "--reason", "complaint"]) == 0
    # And the rest, in whatever order.
    record_synthetic_call(store, consultation, seconds=0.5)
    Retention(store).hold(consultation, "complaint")
    for sub in ("keys", "holds", "consultations"):
        assert (store.root / sub).is_dir()
    _all_private(data_dir)


def test_serve_and_invite_make_private_dirs(data_dir: Path, tmp_path: Path) -> None:
    nested = tmp_path / "deep" / "er" / "data"
    argv = ["invite", "--role", "patient", "--name", "N", "--data-dir", str(nested)]
    assert main(argv) == 0
    self_signed(nested, ["127.0.0.1"])
    RecordingStore(nested)
    _all_private(tmp_path / "deep")


def test_existing_directories_are_left_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    make_private_dir(shared / "a" / "b")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert _modes(shared) == {".": "0o755", "a": "0o700", "a/b": "0o700"}
