"""One configuration: a TOML file (``--config``), ``TELECONSULT_<NAME>`` variables, the command
line. Precedence: command line > environment > file > default.

The options are the command line's: every option of ``serve`` and ``worker`` that sits in a
named argument group (the group is the file's section) is also a file key and a variable of
the same name, so an option added to the parser is configurable everywhere with nothing else
to write, and docs/configuration.md's table is generated from the same parser (a test keeps
it from drifting). The webhook endpoints are the one option with no command-line form: each
carries a secret, and a command line is visible to every local user (``ps``).

Unknown sections and keys in the file are errors naming them; values are converted and
checked by the parser's own types and choices, so a file says nothing the command line
could not. ``teleconsult check-config`` prints the effective configuration with secrets
masked and where each value came from.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from signaling.webhooks.settings import WebhookConfigError, WebhookEndpoint

ENV_PREFIX = "TELECONSULT_"
CONFIG_ENV = "TELECONSULT_CONFIG"
# Variables that are not options: the join secret and the master key are read where they
# are used (never on a command line), the config file's own path, the test clips' cache and
# the benchmark's secret, and the webhook receiver example's secret (docs/webhooks.md).
OTHER_ENV = frozenset(
    {
        "TELECONSULT_SECRET",
        "TELECONSULT_MASTER_KEY",
        CONFIG_ENV,
        "TELECONSULT_CLIP_CACHE",
        "TELECONSULT_BENCH_SECRET",
        "TELECONSULT_WEBHOOK_SECRET",
    }
)
# Masked wherever the configuration is shown.
SECRET_OPTIONS = frozenset({"turn_secret", "ice_credential", "webhooks"})
# Shown with any password in them masked.
URL_OPTIONS = frozenset({"database_url", "redis_url"})
# The commands whose options make up the configuration, in the table's order.
CONFIGURED_COMMANDS = ("serve", "worker")
SECTIONS = ("general", "server", "media", "records", "redis", "webhooks")
MASK = "********"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigError(Exception):
    """A configuration that cannot be used. The message names the key and where it came
    from, never a secret's value."""


@dataclass(frozen=True)
class Option:
    name: str
    section: str
    flag: str | None
    default: Any
    help: str
    kind: str  # value | flag | list | webhooks
    convert: Callable[[str], Any] | None
    choices: tuple[Any, ...] | None
    commands: tuple[str, ...]

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def secret(self) -> bool:
        return self.name in SECRET_OPTIONS


WEBHOOKS = Option(
    name="webhooks",
    section="webhooks",
    flag=None,
    default=(),
    help="where events are posted: a list of {url, secret} (file: an array of tables; "
    'environment: JSON, e.g. [{"url": "https://his.example.org/events", "secret": "..."}]); '
    "each secret at least 32 random characters",
    kind="webhooks",
    convert=None,
    choices=None,
    commands=("serve", "webhooks"),
)


def options(parser: argparse.ArgumentParser) -> dict[str, Option]:
    """Every configurable option, by name, from the parsers of ``serve`` and ``worker``."""
    found: dict[str, Option] = {}
    commands: dict[str, list[str]] = {}
    subparsers = _subparsers(parser)
    for command in CONFIGURED_COMMANDS:
        sub = subparsers[command]
        formatter = sub._get_formatter()
        for group in sub._action_groups:
            if group.title not in SECTIONS:
                continue
            for action in group._group_actions:
                if action.dest == "config":
                    continue
                commands.setdefault(action.dest, []).append(command)
                if action.dest in found:
                    continue
                found[action.dest] = Option(
                    name=action.dest,
                    section=group.title,
                    flag=max(action.option_strings, key=len),
                    default=action.default,
                    help=" ".join(formatter._expand_help(action).split()),
                    kind=_kind(action),
                    convert=action.type if callable(action.type) else None,
                    choices=tuple(action.choices) if action.choices else None,
                    commands=(),
                )
    found = {
        name: Option(**{**o.__dict__, "commands": tuple(commands[name])})
        for name, o in found.items()
    }
    found[WEBHOOKS.name] = WEBHOOKS
    return dict(sorted(found.items(), key=lambda kv: (SECTIONS.index(kv[1].section), kv[0])))


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the parser has no commands")


def _kind(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction):
        return "flag"
    if isinstance(action, argparse._AppendAction):
        return "list"
    return "value"


def path(text: str) -> Path:
    """A path option: ``~`` expanded, wherever it was given (a file, a variable)."""
    return Path(text).expanduser()


def config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=path,
        metavar="FILE",
        help="a TOML configuration file (default: $TELECONSULT_CONFIG); the command line and "
        "TELECONSULT_* variables override it",
    )


def log_level_arg(p: argparse._ActionsContainer) -> None:
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the least severe log records written",
    )


# ------------------------------------------------------------------ reading


def read_file(path: Path, known: Mapping[str, Option]) -> dict[str, Any]:
    """The file's values by option name; unknown sections or keys are errors."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{path}: unknown section [{section}]")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section} must be a section ([{section}])")
        for key, value in table.items():
            option = known.get(key)
            if option is None or option.section != section:
                hint = f" (it belongs in [{option.section}])" if option else ""
                raise ConfigError(f"{path}: unknown key [{section}] {key}{hint}")
            values[key] = _from_file(option, value, f"{path}: [{section}] {key}")
    return values


def read_env(
    environ: Mapping[str, str], known: Mapping[str, Option]
) -> tuple[dict[str, Any], list[str]]:
    """The environment's values by option name, and the unknown ``TELECONSULT_*`` names."""
    by_env = {o.env: o for o in known.values()}
    values: dict[str, Any] = {}
    unknown = []
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or name in OTHER_ENV:
            continue
        option = by_env.get(name)
        if option is None:
            unknown.append(name)
            continue
        values[option.name] = _from_env(option, text, f"${name}")
    return values, sorted(unknown)


def _from_file(option: Option, value: Any, where: str) -> Any:
    if option.kind == "webhooks":
        return _webhooks(value, where)
    if option.kind == "flag":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false")
        return value
    if option.kind == "list":
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        return [_one(option, item, where) for item in value]
    return _one(option, value, where)


def _from_env(option: Option, text: str, where: str) -> Any:
    if option.kind == "webhooks":
        try:
            value = json.loads(text)
        except ValueError:
            raise ConfigError(f"{where}: expected JSON, a list of {{url, secret}}") from None
        return _webhooks(value, where)
    if option.kind == "flag":
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ConfigError(f"{where}: expected true or false")
        return word in _TRUE
    if option.kind == "list":
        return [_one(option, item.strip(), where) for item in text.split(",") if item.strip()]
    return _one(option, text, where)


def _one(option: Option, value: Any, where: str) -> Any:
    shown = MASK if option.secret else repr(value)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{where}: expected text or a number, got {type(value).__name__}")
    convert = option.convert
    try:
        if convert in (int, float) and not isinstance(value, str):
            if convert is int and not isinstance(value, int):
                raise ValueError
            converted = convert(value)  # type: ignore[misc]
        elif isinstance(value, str):
            converted = convert(value) if convert is not None else value
        else:
            raise ValueError
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise ConfigError(f"{where}: {shown} is not a valid value") from None
    if option.choices is not None and converted not in option.choices:
        allowed = ", ".join(str(c) for c in option.choices)
        raise ConfigError(f"{where}: {shown} is not one of {allowed}")
    return converted


def _webhooks(value: Any, where: str) -> tuple[WebhookEndpoint, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{where}: expected a list of {{url, secret}}")
    endpoints = []
    for i, item in enumerate(value):
        extra = set(item) - {"url", "secret"}
        if extra:
            raise ConfigError(f"{where}[{i}]: unknown key {sorted(extra)[0]}")
        try:
            endpoints.append(WebhookEndpoint.parse(item.get("url"), item.get("secret")))
        except WebhookConfigError as exc:
            raise ConfigError(f"{where}[{i}]: {exc}") from None
    return tuple(endpoints)


# ------------------------------------------------------------------ applying


@dataclass(frozen=True)
class Effective:
    """What a command runs with: every option's value and where it came from."""

    command: str
    file: Path | None
    values: dict[str, Any]
    sources: dict[str, str]  # default | file | env | command line
    unknown_env: list[str]


def apply(
    build_parser: Callable[[], argparse.ArgumentParser],
    args: argparse.Namespace,
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    command: str | None = None,
) -> Effective:
    """Fill ``args`` (parsed from ``argv``) with the environment's and the file's values
    where the command line said nothing. ``command`` (default: the one run) picks which
    options apply; raises ConfigError."""
    parser = build_parser()
    known = options(parser)
    command = command or args.command
    path = getattr(args, "config", None) or environ.get(CONFIG_ENV)
    file_values = read_file(Path(path), known) if path else {}
    env_values, unknown_env = read_env(environ, known)
    given = _given_on_command_line(build_parser, argv)
    dests = {a.dest for a in _subparsers(parser)[command]._actions}
    mine = [o for o in known.values() if o.name in dests or command in o.commands]
    values, sources = {}, {}
    for option in mine:
        if option.name in given:
            value, source = getattr(args, option.name), "command line"
        elif option.name in env_values:
            value, source = env_values[option.name], f"env {option.env}"
        elif option.name in file_values:
            value, source = file_values[option.name], "file"
        else:
            value, source = getattr(args, option.name, option.default), "default"
        setattr(args, option.name, value)
        values[option.name], sources[option.name] = value, source
    return Effective(command, Path(path) if path else None, values, sources, unknown_env)


def _given_on_command_line(
    build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str]
) -> set[str]:
    """Which options ``argv`` sets itself: parsed again with every default suppressed."""
    parser = build_parser()
    for sub in [parser, *_subparsers(parser).values()]:
        for action in sub._actions:
            if action.option_strings:
                action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(list(argv))))


# ------------------------------------------------------------------ showing


def shown(option: Option, value: Any) -> str:
    """A value as TOML would write it, secrets masked."""
    if option.kind == "webhooks":
        items = ", ".join(f'{{ url = "{e.url}", secret = "{MASK}" }}' for e in value)
        return f"[{items}]"
    if option.secret:
        return f'"{MASK}"'
    if option.name in URL_OPTIONS:
        value = _without_password(str(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(json.dumps(str(v)) for v in value) + "]"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", f":{MASK}@")
        return parts._replace(netloc=netloc).geturl()
    return url


def render(effective: Effective, known: Mapping[str, Option]) -> str:
    lines = [f"# teleconsult {effective.command}: the effective configuration"]
    lines.append(f"# file: {effective.file or 'none'}")
    section = None
    for name, value in effective.values.items():
        option = known[name]
        if option.section != section:
            section = option.section
            lines.append(f"\n[{section}]")
        if value is None:
            lines.append(f"# {name} is unset  ({effective.sources[name]})")
        else:
            lines.append(f"{name} = {shown(option, value)}  # {effective.sources[name]}")
    return "\n".join(lines)


def markdown_table(parser: argparse.ArgumentParser) -> str:
    """docs/configuration.md's table of every option."""
    rows = [
        "| Key (file section) | Command line | Environment | Commands | Default | Meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for option in options(parser).values():
        default = option.default
        if option.kind == "list" or option.kind == "webhooks":
            default = "none" if not default else default
        elif default is None:
            default = "—"
        elif option.kind == "flag":
            default = "false"
        flag = f"`{option.flag}`" if option.flag else "—"
        meaning = option.help.replace("|", "\\|")
        rows.append(
            f"| `{option.name}` ({option.section}) | {flag} | `{option.env}` "
            f"| {', '.join(option.commands)} | {default} | {meaning} |"
        )
    return "\n".join(rows)


TABLE_BEGIN = "<!-- options table: generated by `python -m signaling.cli.configuration` -->"
TABLE_END = "<!-- end of the options table -->"


def _write_table(doc: Path) -> None:
    from signaling.cli.main import build_parser

    text = doc.read_text(encoding="utf-8")
    head, _, rest = text.partition(TABLE_BEGIN)
    _, _, tail = rest.partition(TABLE_END)
    table = markdown_table(build_parser())
    doc.write_text(f"{head}{TABLE_BEGIN}\n{table}\n{TABLE_END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    _write_table(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/configuration.md"))
