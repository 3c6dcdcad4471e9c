from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import pytest

from rooms.consultation import ConsultationKind
from rooms.roles import Role
from signaling import tokens
from signaling.cli.main import main
from signaling.config import ServerConfig
from signaling.keys import default_data_dir, load_or_create_secret

NAME = "Zhao Meiling"
JOIN = re.compile(r"^(?P<base>https?://[^ ]+)/join/(?P<token>[\w-]+\.[\w-]+\.[\w-]+)$")


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("TELECONSULT_SECRET", raising=False)
    monkeypatch.delenv("TELECONSULT_METRICS_TOKEN", raising=False)
    monkeypatch.setenv("TELECONSULT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def fake_app(monkeypatch: pytest.MonkeyPatch) -> list[ServerConfig]:
    """Stand in for signaling.app so ``serve`` returns instead of serving."""
    started: list[ServerConfig] = []
    module = types.ModuleType("signaling.app")
    module.run = started.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "signaling.app", module)
    return started


def test_invite_prints_one_url_whose_token_verifies_with_the_serve_secret(
    capsys: pytest.CaptureFixture[str], fake_app: list[ServerConfig]
) -> None:
    assert main(["invite", "--role", "patient", "--name", NAME, "--consultation", "c-123456"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.count("\n") == 1
    match = JOIN.match(out.strip())
    assert match and match["base"] == "http://127.0.0.1:8080"

    # The secret serve would use, obtained the way serve obtains it.
    assert main(["serve"]) == 0
    assert fake_app[0].secret == load_or_create_secret(default_data_dir())
    grant = tokens.verify(fake_app[0].secret, match["token"])
    assert grant.consultation_id == "c-123456"
    assert grant.role is Role.patient
    assert grant.kind is ConsultationKind.joint
    assert grant.name == NAME
    assert grant.identity.startswith("u-")
    assert NAME not in capsys.readouterr().out


def test_invite_options(capsys: pytest.CaptureFixture[str], data_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    argv = ["invite", "--role", "observer", "--name", NAME, "--identity", "his-9", "--kind"]
    argv += ["ward_round", "--ttl", "60", "--base-url", "https://tc.example.org/", "--data-dir"]
    assert main([*argv, str(other)]) == 0
    match = JOIN.match(capsys.readouterr().out.strip())
    assert match and match["base"] == "https://tc.example.org"
    grant = tokens.verify(load_or_create_secret(other), match["token"])
    assert (grant.role, grant.kind, grant.identity) == (Role.observer, "ward_round", "his-9")
    assert len(grant.consultation_id) >= 6
    assert not data_dir.exists()  # --data-dir, not the default, was used


@pytest.mark.parametrize(
    "argv",
    [
        ["--role", "admin", "--name", NAME],
        ["--role", "doctor", "--name", NAME, "--consultation", "Zhang San bed 4"],
        ["--role", "doctor", "--name", NAME, "--consultation", "abc"],
        ["--role", "doctor", "--name", NAME, "--kind", "party"],
        ["--role", "doctor", "--name", NAME, "--ttl", "0"],
        ["--role", "doctor", "--name", NAME, "--base-url", "ftp://x"],
        ["--role", "doctor"],
    ],
)
def test_bad_invite_exits_2_with_a_message_on_stderr(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["invite", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "error" in err
    assert NAME not in err
    assert "Zhang San" not in err


def test_serve_builds_the_config_and_prints_a_working_doctor_link(
    capsys: pytest.CaptureFixture[str], fake_app: list[ServerConfig], data_dir: Path
) -> None:
    argv = ["serve", "--host", "0.0.0.0", "--port", "8443", "--self-signed"]
    argv += ["--ice-address", "10.0.0.5=203.0.113.7", "--ice-address", "10.0.0.6"]
    argv += ["--ice-server", "stun:stun.example.org:3478", "--ice-server", "turn:t.example.org"]
    argv += ["--ice-username", "u", "--ice-credential", "c", "--video-codec", "H264"]
    assert main(argv) == 0
    [config] = fake_app
    assert (config.host, config.port, config.data_dir) == ("0.0.0.0", 8443, data_dir)
    assert config.tls_cert and config.tls_key and config.tls_cert.exists()
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert config.media.video_codec == "H264"
    assert [(a.listen, a.announced) for a in config.media.ice_addresses] == [
        ("10.0.0.5", "203.0.113.7"),
        ("10.0.0.6", None),
    ]
    stun, turn = config.media.ice_servers
    assert stun.urls == ("stun:stun.example.org:3478",) and stun.username is None
    assert (turn.urls, turn.username, turn.credential) == (("turn:t.example.org",), "u", "c")
    assert config.media.turn_secret is None

    out = capsys.readouterr().out
    assert "https://127.0.0.1:8443" in out
    [url] = [w for w in out.split() if "/join/" in w]
    match = JOIN.match(url)
    assert match and match["base"] == "https://127.0.0.1:8443"
    grant = tokens.verify(config.secret, match["token"])
    assert grant.role is Role.doctor
    # The printed invite command targets the same consultation.
    assert f"--consultation {grant.consultation_id}" in out
    assert grant.name not in out.replace(url, "")


def test_serve_defaults(fake_app: list[ServerConfig], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve"]) == 0
    [config] = fake_app
    assert (config.host, config.port, config.tls_cert, config.public_url) == (
        "127.0.0.1",
        8080,
        None,
        None,
    )
    assert [a.listen for a in config.media.ice_addresses] == ["127.0.0.1"]
    assert config.media.ice_servers == ()
    assert "http://127.0.0.1:8080/join/" in capsys.readouterr().out
    assert repr(config.secret) not in repr(config)
    assert config.max_composers == max(1, (os.cpu_count() or 1) - 1)


def test_serve_max_composers(fake_app: list[ServerConfig]) -> None:
    assert main(["serve", "--max-composers", "3"]) == 0
    assert fake_app[0].max_composers == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["--tls-cert", "c.pem"],
        ["--ice-address", "not-an-ip"],
        ["--ice-server", "http://stun.example.org"],
        ["--ice-server", "turn:t.example.org"],
        ["--ice-username", "u", "--ice-credential", "c"],
        ["--video-codec", "AV1"],
        ["--max-composers", "0"],
    ],
)
def test_bad_serve_exits_2_before_starting(
    argv: list[str], fake_app: list[ServerConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", *argv]) == 2
    assert fake_app == []
    assert "error" in capsys.readouterr().err


def test_world_readable_secret_exits_1(
    data_dir: Path, fake_app: list[ServerConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    load_or_create_secret(data_dir)
    (data_dir / "secret.key").chmod(0o644)
    assert main(["invite", "--role", "doctor", "--name", NAME]) == 1
    assert main(["serve"]) == 1
    assert fake_app == []
    assert "chmod 600" in capsys.readouterr().err


def test_serve_with_a_turn_secret(fake_app: list[ServerConfig]) -> None:
    secret = "Zq7-vK2pW9xR4mT8bN1cY6hJ3dF5gL0s"
    assert main(["serve", "--ice-server", "turn:t.example.org", "--turn-secret", secret]) == 0
    [config] = fake_app
    assert config.media.turn_secret == secret.encode()
    assert secret not in repr(config)


@pytest.mark.parametrize(
    "argv",
    [
        ["--ice-server", "turn:t.example.org"],  # no credentials of any kind
        ["--ice-server", "turn:t.example.org", "--turn-secret", "a" * 40],  # weak
        ["--turn-secret", "Zq7-vK2pW9xR4mT8bN1cY6hJ3dF5gL0s"],  # no TURN server
    ],
)
def test_serve_refuses_bad_turn_settings(
    fake_app: list[ServerConfig], capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main(["serve", *argv]) == 2
    assert fake_app == []
    assert "a" * 40 not in capsys.readouterr().err


def test_serve_takes_the_metrics_token_from_the_environment(
    fake_app: list[ServerConfig],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve"]) == 0
    assert fake_app.pop().metrics_token is None  # loopback only
    token = "mT8bN1cY6hJ3dF5gL0sZq7"
    monkeypatch.setenv("TELECONSULT_METRICS_TOKEN", token)
    assert main(["serve"]) == 0
    [config] = fake_app
    assert config.metrics_token == token and token not in repr(config)
    monkeypatch.setenv("TELECONSULT_METRICS_TOKEN", "short")
    assert main(["serve"]) == 2
    assert "TELECONSULT_METRICS_TOKEN" in capsys.readouterr().err
