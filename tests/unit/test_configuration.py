"""One configuration: a TOML file, TELECONSULT_* variables, the command line, in that order of
strength; unknown keys refused by name; check-config shows it all with secrets masked."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from signaling.cli import configuration
from signaling.cli.main import build_parser, main
from signaling.config import ServerConfig

TURN_SECRET = "Zq7-vK2pW9xR4mT8bN1cY6hJ3dF5gL0s"
HOOK_SECRET = "kP4-wQ8rT2yU6iO0pA3sD7fG1hJ5kL9z"
DB_PASSWORD = "hunter2-db-pass"
REDIS_PASSWORD = "hunter3-redis-pass"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("TELECONSULT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TELECONSULT_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def fake_app(monkeypatch: pytest.MonkeyPatch) -> list[ServerConfig]:
    """Stand in for signaling.app so ``serve`` returns instead of serving."""
    started: list[ServerConfig] = []
    module = types.ModuleType("signaling.app")
    module.run = started.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "signaling.app", module)
    return started


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "teleconsult.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _serve(fake_app: list[ServerConfig], *argv: str) -> ServerConfig:
    assert main(["serve", *argv]) == 0
    return fake_app.pop()


def test_command_line_beats_environment_beats_file_beats_default(
    tmp_path: Path, fake_app: list[ServerConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _file(
        tmp_path,
        '[server]\nport = 9000\nhost = "0.0.0.0"\n'
        '[media]\nice_address = ["10.0.0.5"]\nvideo_codec = "H264"\nmax_video_kbps = 900\n',
    )
    assert _serve(fake_app).port == 8080
    config = _serve(fake_app, "--config", str(path))
    assert (config.port, config.host, config.media.video_codec) == (9000, "0.0.0.0", "H264")
    assert config.media.max_video_bitrate == 900_000
    monkeypatch.setenv("TELECONSULT_PORT", "9100")
    assert _serve(fake_app, "--config", str(path)).port == 9100
    config = _serve(fake_app, "--config", str(path), "--port", "9200", "--ice-address", "10.0.0.6")
    assert config.port == 9200
    # A list on the command line replaces the file's; it is not added to it.
    assert [a.listen for a in config.media.ice_addresses] == ["10.0.0.6"]
    # The file's path from the environment too.
    monkeypatch.setenv("TELECONSULT_CONFIG", str(path))
    assert _serve(fake_app).host == "0.0.0.0"


def test_every_kind_of_option_as_an_environment_variable(
    fake_app: list[ServerConfig], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hooks = [{"url": "https://his.example.org/events?key=abc", "secret": HOOK_SECRET}]
    for name, value in {
        "TELECONSULT_HOST": "::1",
        "TELECONSULT_SELF_SIGNED": "yes",
        "TELECONSULT_ICE_ADDRESS": "10.0.0.5=203.0.113.7, 10.0.0.6",
        "TELECONSULT_VIDEO_CODEC": "H264",
        "TELECONSULT_MAX_COMPOSERS": "3",
        "TELECONSULT_WEBHOOKS": json.dumps(hooks),
        "TELECONSULT_WEBHOOK_GIVE_UP_DAYS": "0.5",
    }.items():
        monkeypatch.setenv(name, value)
    config = _serve(fake_app)
    assert config.host == "::1" and config.tls_cert is not None and config.max_composers == 3
    assert [(a.listen, a.announced) for a in config.media.ice_addresses] == [
        ("10.0.0.5", "203.0.113.7"),
        ("10.0.0.6", None),
    ]
    (endpoint,) = config.webhooks.endpoints
    assert endpoint.url == hooks[0]["url"] and endpoint.secret == HOOK_SECRET.encode()
    assert config.webhooks.give_up_days == 0.5
    assert HOOK_SECRET not in repr(config)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[server]\nprot = 8080\n", "unknown key [server] prot"),
        ("[serverr]\nport = 8080\n", "unknown section [serverr]"),
        ("[media]\nport = 8080\n", "unknown key [media] port (it belongs in [server])"),
        ("port = 8080\n", "unknown section [port]"),
        ('[server]\nport = "eighty"\n', "[server] port: 'eighty' is not a valid value"),
        ('[media]\nvideo_codec = "AV1"\n', "is not one of VP8, H264"),
        ("[server]\nself_signed = 1\n", "[server] self_signed: expected true or false"),
        ('[webhooks]\nwebhooks = [{ url = "ftp://his.example.org/x", secret = "s" }]\n', "http"),
        ("[webhooks]\nwebhooks = [{ url = 'https://h.example.org/', secret = 'short' }]\n", "32"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_a_bad_file_is_refused_naming_the_key(
    tmp_path: Path,
    fake_app: list[ServerConfig],
    capsys: pytest.CaptureFixture[str],
    text: str,
    named: str,
) -> None:
    path = _file(tmp_path, text)
    assert main(["serve", "--config", str(path)]) == 2
    assert fake_app == []
    err = capsys.readouterr().err
    assert named in err and "short" not in err


def test_a_bad_variable_is_refused_naming_it_without_echoing_a_secret(
    fake_app: list[ServerConfig],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TELECONSULT_PORT", "http")
    assert main(["serve"]) == 2
    assert "$TELECONSULT_PORT" in capsys.readouterr().err
    monkeypatch.delenv("TELECONSULT_PORT")
    monkeypatch.setenv(
        "TELECONSULT_WEBHOOKS", json.dumps([{"url": "file:///etc/x", "secret": HOOK_SECRET}])
    )
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "$TELECONSULT_WEBHOOKS[0]" in err and HOOK_SECRET not in err
    assert fake_app == []


def test_check_config_prints_the_effective_configuration_with_secrets_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _file(
        tmp_path,
        f"""
[server]
port = 8443
[media]
ice_server = ["turn:turn.example.org"]
turn_secret = "{TURN_SECRET}"
[records]
database_url = "postgresql+asyncpg://tc:{DB_PASSWORD}@db.example.org/teleconsult"
[webhooks]
webhooks = [{{ url = "https://his.example.org/events", secret = "{HOOK_SECRET}" }}]
webhook_timeout_s = 5
""",
    )
    monkeypatch.setenv("TELECONSULT_REDIS_URL", f"redis://:{REDIS_PASSWORD}@10.0.0.2:6379/0")
    monkeypatch.setenv("TELECONSULT_WORKERS", "2")
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    for secret in (TURN_SECRET, HOOK_SECRET, DB_PASSWORD, REDIS_PASSWORD):
        assert secret not in out
    assert "port = 8443  # file" in out
    assert 'turn_secret = "********"  # file' in out
    assert "tc:********@db.example.org" in out
    assert "workers = 2  # env TELECONSULT_WORKERS" in out
    assert 'webhooks = [{ url = "https://his.example.org/events", secret = "********" }]' in out
    assert "webhook_timeout_s = 5.0  # file" in out
    assert 'host = "127.0.0.1"  # default' in out
    assert "--port" not in out and (tmp_path / "data").exists() is False  # creates nothing

    # What serve would refuse, check-config refuses too, and says so.
    assert main(["check-config", "--config", str(path), "--port", "1"]) == 2  # not an option
    monkeypatch.delenv("TELECONSULT_REDIS_URL")
    assert main(["check-config", "--config", str(path)]) == 2
    assert "--workers needs --redis" in capsys.readouterr().err
    monkeypatch.delenv("TELECONSULT_WORKERS")
    monkeypatch.setenv("TELECONSULT_PROT", "8080")
    assert main(["check-config", "--config", str(path)]) == 2
    assert "unknown variable TELECONSULT_PROT" in capsys.readouterr().err


def test_check_config_for_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _file(tmp_path, '[redis]\nredis_url = "redis://10.0.0.2:6379/0"\n[server]\nport = 1\n')
    assert main(["check-config", "--for", "worker", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert 'redis_url = "redis://10.0.0.2:6379/0"  # file' in out
    # A serve option: valid in the file, not the worker's (udp_ports is the worker's own).
    assert not any(line.lstrip("# ").startswith("port ") for line in out.splitlines()), out
    path.write_text("[media]\nmax_video_kbps = 10\n")
    assert main(["check-config", "--for", "worker", "--config", str(path)]) == 2


def test_the_documented_table_is_the_parsers() -> None:
    table = configuration.markdown_table(build_parser())
    doc = DOCS.read_text(encoding="utf-8")
    assert f"{configuration.TABLE_BEGIN}\n{table}\n{configuration.TABLE_END}" in doc, (
        "docs/configuration.md is out of date: python -m signaling.cli.configuration"
    )
    for option in configuration.options(build_parser()).values():
        assert option.env in table
