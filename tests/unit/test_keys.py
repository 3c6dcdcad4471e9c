from __future__ import annotations

import secrets
import stat
from pathlib import Path

import pytest

from signaling.keys import SecretError, default_data_dir, load_or_create_secret, weakness

STRONG = "Zq7-vK2pW9xR4mT8bN1cY6hJ3dF5gL0s"  # 32 characters, no pattern


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TELECONSULT_SECRET", "TELECONSULT_DATA_DIR", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_is_created_0600_in_a_0700_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    secret = load_or_create_secret(data_dir)
    key = data_dir / "secret.key"
    assert mode(key) == 0o600
    assert mode(data_dir) == 0o700
    # 32 random bytes, hex: the key is the hex string's bytes, as docs/tokens.md says.
    assert len(secret) == 64
    bytes.fromhex(secret.decode())
    assert key.read_text().strip().encode() == secret
    assert [p.name for p in data_dir.iterdir()] == ["secret.key"]  # no temp file left


def test_created_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0)
    try:
        load_or_create_secret(tmp_path / "d")
    finally:
        os.umask(old)
    assert mode(tmp_path / "d" / "secret.key") == 0o600
    assert mode(tmp_path / "d") == 0o700


def test_secret_is_reused(tmp_path: Path) -> None:
    first = load_or_create_secret(tmp_path)
    assert load_or_create_secret(tmp_path) == first
    assert len({load_or_create_secret(tmp_path / "other"), first}) == 2


def test_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_or_create_secret(tmp_path)
    monkeypatch.setenv("TELECONSULT_SECRET", STRONG)
    assert load_or_create_secret(tmp_path) == STRONG.encode()


def test_env_secret_is_not_hex_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hex_secret = secrets.token_hex(32)
    monkeypatch.setenv("TELECONSULT_SECRET", hex_secret)
    assert load_or_create_secret(tmp_path / "x") == hex_secret.encode()
    assert not (tmp_path / "x").exists()


def test_short_env_secret_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELECONSULT_SECRET", "tooshort")
    with pytest.raises(SecretError) as exc:
        load_or_create_secret(tmp_path)
    assert "tooshort" not in str(exc.value)


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o660])
def test_file_readable_by_others_is_refused(tmp_path: Path, bad_mode: int) -> None:
    load_or_create_secret(tmp_path)
    key = tmp_path / "secret.key"
    key.chmod(bad_mode)
    with pytest.raises(SecretError, match="chmod 600") as exc:
        load_or_create_secret(tmp_path)
    assert key.read_text().strip() not in str(exc.value)


def test_short_file_secret_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "secret.key"
    key.write_text("short\n")
    key.chmod(0o600)
    with pytest.raises(SecretError):
        load_or_create_secret(tmp_path)


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "teleconsult"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "teleconsult"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "teleconsult"
    monkeypatch.setenv("TELECONSULT_DATA_DIR", str(tmp_path / "explicit"))
    assert default_data_dir() == tmp_path / "explicit"


@pytest.mark.parametrize(
    "weak",
    [
        "a" * 40,
        "ab" * 20,
        "password" * 5,
        "abcdefghij" * 4,
        "0123456789" + "0" * 30,
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaabcde",
    ],
)
def test_weak_secrets_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weak: str
) -> None:
    assert weakness(weak) is not None
    monkeypatch.setenv("TELECONSULT_SECRET", weak)
    with pytest.raises(SecretError, match=r"secrets\.token_hex") as exc:
        load_or_create_secret(tmp_path)
    assert weak not in str(exc.value)


def test_random_secrets_of_32_characters_and_more_pass() -> None:
    for _ in range(2000):
        assert weakness(secrets.token_hex(16)) is None  # 32 hex characters: 128 bits
        assert weakness(secrets.token_urlsafe(32)) is None
    assert weakness(STRONG) is None
