"""``teleconsult serve`` and ``teleconsult invite``.

Nothing here prints or logs a display name: the only place one appears is inside the token of
a join URL, which is the point of printing it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit

from media.config import MediaConfig
from recordings import cli as recordings_cli
from recordings.crypto import load_master_key
from recordings.errors import RecordingError
from rooms.consultation import ConsultationKind, new_consultation_id, validate_consultation_id
from rooms.errors import InvalidConsultationId
from rooms.records.database import Database, DatabaseError
from rooms.roles import Role
from signaling import tokens
from signaling.audit.log import log_path
from signaling.audit.verify import verify
from signaling.cli import cluster as cluster_cli
from signaling.cli import configuration, media_args
from signaling.cli import frontdesk as frontdesk_cli
from signaling.cli import opinions as opinions_cli
from signaling.cli import records as records_cli
from signaling.cli import webhooks as webhooks_cli
from signaling.cli import worker as worker_cli
from signaling.cli.media_args import UsageError
from signaling.config import ServerConfig
from signaling.http import logsafe
from signaling.http.composing import default_limit
from signaling.http.tls import self_signed
from signaling.keys import SecretError, default_data_dir, load_or_create_secret
from signaling.webhooks.settings import WebhookConfigError, WebhookSettings

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
# Long enough for a clinic's half-day session, short enough that a forwarded link goes stale.
DEFAULT_INVITE_TTL_S = 8 * 3600
# Exit codes: 2 for a bad command line (argparse's convention), 1 for a bad environment.
_USAGE, _ENVIRONMENT = 2, 1
# Commands that read the configuration file and variables, and whose options they take.
CONFIGURABLE = {"serve": "serve", "worker": "worker", "webhooks": "webhooks"}
# The bearer token /metrics requires (signaling/http/metrics.py): from the environment, never
# the command line, where `ps` would show it. Unset: /metrics answers loopback only.
METRICS_TOKEN_ENV = "TELECONSULT_METRICS_TOKEN"
_MIN_METRICS_TOKEN = 16


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        command = CONFIGURABLE.get(args.command) or getattr(args, "check_for", None)
        if command is not None:
            # Command line > environment > file > default (signaling/cli/configuration.py).
            effective = configuration.apply(build_parser, args, argv, os.environ, command=command)
            args.effective = effective
            if effective.unknown_env and args.command != "check-config":
                print(
                    "teleconsult: warning: unknown variables (ignored): "
                    + ", ".join(effective.unknown_env),
                    file=sys.stderr,
                )
    except SystemExit as exit_:
        # argparse exits on --help and on errors; main() returns codes instead of exiting.
        return exit_.code if isinstance(exit_.code, int) else _USAGE
    except configuration.ConfigError as e:
        print(f"teleconsult: error: {e}", file=sys.stderr)
        return _USAGE
    try:
        return int(args.handler(args))
    except (UsageError, records_cli.CommandError, WebhookConfigError) as e:
        print(f"teleconsult: error: {e}", file=sys.stderr)
        return _USAGE
    except (SecretError, DatabaseError, RedisUnreachable, OSError) as e:
        print(f"teleconsult: error: {e}", file=sys.stderr)
        return _ENVIRONMENT


# ------------------------------------------------------------------ recordings


def recordings(args: argparse.Namespace) -> int:
    """``teleconsult recordings list|verify|purge|hold|release|compose``."""
    data_dir = args.data_dir or default_data_dir()
    code = recordings_cli.run(args, data_dir)
    if code == 0 and args.recordings_command == "purge":
        # The call quality kept with a consultation goes with it (it is not sealed with the
        # data key: numbers, not clinical text).
        deleted = records_cli.purge_call_quality(data_dir, args.database_url)
        if deleted and not args.json:
            print(f"{deleted} call quality samples of purged consultations deleted")
    return code


# ------------------------------------------------------------------ audit


def audit_verify(args: argparse.Namespace) -> int:
    """``teleconsult audit verify``: every finding on a line, exit 1 if there is any."""
    data_dir = args.data_dir or default_data_dir()
    try:
        master_key = load_master_key(data_dir)
    except RecordingError as e:
        print(f"teleconsult: error: {e}", file=sys.stderr)
        return _ENVIRONMENT
    path = log_path(data_dir)
    report = verify(path, master_key)
    for finding in report.findings:
        print(finding)
    if report.findings_left_off:
        print(f"... and {report.findings_left_off} more")
    print(
        f"{path}: {report.entries} entries, head seq {report.head.seq}, "
        f"{report.checkpoints} checkpoints, {report.count} problems"
    )
    return 0 if report.ok else 1


# ------------------------------------------------------------------ check-config


def check_config(args: argparse.Namespace) -> int:
    """Print the effective configuration of ``--for`` (secrets masked); exit 2 on any
    problem: an unknown variable, or a value the command would refuse. Creates nothing."""
    known = configuration.options(build_parser())
    print(configuration.render(args.effective, known))
    problems = [f"unknown variable {name}" for name in args.effective.unknown_env]
    try:
        if args.check_for == "serve":
            _checked(args)
        else:
            worker_cli.checked(args)
    except (UsageError, WebhookConfigError) as e:
        problems.append(str(e))
    for problem in problems:
        print(f"teleconsult: error: {problem}", file=sys.stderr)
    if problems:
        return _USAGE
    print("\n# ok")
    return 0


# ------------------------------------------------------------------ invite


def invite(args: argparse.Namespace) -> int:
    if args.consultation is None:
        consultation_id = new_consultation_id()
    else:
        try:
            consultation_id = validate_consultation_id(args.consultation)
        except InvalidConsultationId as e:
            raise UsageError(f"--consultation: {e}") from None
    if args.ttl <= 0:
        raise UsageError("--ttl must be a positive number of seconds")
    identity = args.identity or tokens.new_identity()
    if len(identity) > tokens.MAX_IDENTITY_CHARS:
        raise UsageError(f"--identity is longer than {tokens.MAX_IDENTITY_CHARS} characters")
    if len(args.name) > tokens.MAX_NAME_CHARS:
        raise UsageError(f"--name is longer than {tokens.MAX_NAME_CHARS} characters")
    base = _base_url_arg(args.base_url)
    secret = load_or_create_secret(args.data_dir or default_data_dir())
    token = tokens.mint(
        secret,
        consultation_id=consultation_id,
        kind=args.kind,
        identity=identity,
        name=args.name,
        role=args.role,
        ttl_s=args.ttl,
        waiting_room=False if args.no_waiting_room else None,
    )
    print(join_url(base, token))
    return 0


def join_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/join/{token}"


# ------------------------------------------------------------------ serve


def serve(args: argparse.Namespace) -> int:
    config = _server_config(args)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Every record: join tokens masked, a client's control characters escaped.
    logsafe.install()
    if not _hold_data_dir(config.data_dir):
        print(
            f"error: another teleconsult serve uses {config.data_dir}: its audit log takes one "
            "writer. Give each signaling node its own --data-dir.",
            file=sys.stderr,
        )
        return 1
    asyncio.run(_check_records(config))
    if config.redis_url:
        asyncio.run(_check_redis(config.redis_url))
    if config.webhooks.endpoints:
        logging.getLogger(__name__).info(
            "webhooks to %s", ", ".join(f"{e.host} ({e.key})" for e in config.webhooks.endpoints)
        )
    first_admin = asyncio.run(frontdesk_cli.make_first_admin(config.data_dir, config.database_url))
    base = base_url(config)
    _print_banner(config, base, args.data_dir)
    if first_admin is not None:
        frontdesk_cli.print_first_admin(base, first_admin, _program())
    # Imported here: the app pulls in aiortc and av, which ``invite`` has no use for.
    from signaling.app import run

    run(config)
    return 0


# Held for the life of the serving process (never closed): the lock goes with the process.
_DATA_DIR_LOCKS: dict[Path, int] = {}


def _hold_data_dir(data_dir: Path) -> bool:
    """One serving process per data directory: its audit log is one hash chain with one
    writer, so a second node on the same directory would fork it. False if another holds it.
    (Other commands, such as ``invite``, never write the audit log.)"""
    import fcntl

    path = (data_dir / "serve.lock").resolve()
    if path in _DATA_DIR_LOCKS:
        return True  # this process holds it already
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _DATA_DIR_LOCKS[path] = fd
    return True


async def _check_records(config: ServerConfig) -> None:
    """Refuse to start on a database behind this version (raises NotMigrated, a clear
    message and exit code 1); a brand-new embedded one is created."""
    database = Database.for_data_dir(config.data_dir, config.database_url)
    try:
        await database.ensure_current(create_embedded=True)
    finally:
        await database.close()


async def _check_redis(url: str) -> None:
    """A node on Redis that cannot reach it refuses to start, saying why (exit code 1)."""
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.Redis.from_url(url)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise RedisUnreachable(f"cannot reach Redis at {_redacted(url)}: {exc}") from None
    finally:
        await client.aclose()


class RedisUnreachable(RuntimeError):
    pass


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def base_url(config: ServerConfig) -> str:
    """Where people reach the server: ``public_url``, else the address it listens on."""
    if config.public_url:
        return config.public_url.rstrip("/")
    scheme = "https" if config.tls_cert else "http"
    host = config.host
    # Listening everywhere: this machine is reachable on loopback at least.
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{config.port}"


def _checked(args: argparse.Namespace) -> tuple[MediaConfig, str | None, WebhookSettings]:
    """The options of ``serve`` checked, with nothing created: raises UsageError or
    WebhookConfigError (``check-config`` runs this too)."""
    media = media_args.config(args)
    if args.max_composers is not None and args.max_composers < 1:
        raise UsageError("--max-composers must be at least 1")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    public_url = _base_url_arg(args.public_url) if args.public_url else None
    _workers(args)
    return media, public_url, webhook_settings(args)


def webhook_settings(args: argparse.Namespace) -> WebhookSettings:
    return WebhookSettings(
        endpoints=tuple(args.webhooks),
        timeout_s=args.webhook_timeout_s,
        concurrency=args.webhook_concurrency,
        retry_max_s=args.webhook_retry_max_s,
        give_up_days=args.webhook_give_up_days,
    )


def _server_config(args: argparse.Namespace) -> ServerConfig:
    data_dir: Path = args.data_dir or default_data_dir()
    media, public_url, webhooks = _checked(args)
    # Before the certificate: whichever creates the data dir, it is made private.
    secret = load_or_create_secret(data_dir)
    tls_cert, tls_key = args.tls_cert, args.tls_key
    if args.self_signed:
        hosts = [args.host, *_ice_hosts(media)]
        if public_url:
            hosts.append(urlsplit(public_url).hostname or "")
        tls_cert, tls_key = self_signed(data_dir, hosts)
    return ServerConfig(
        host=args.host,
        port=args.port,
        data_dir=data_dir,
        media=media,
        tls_cert=tls_cert,
        tls_key=tls_key,
        public_url=public_url,
        secret=secret,
        database_url=args.database_url,
        max_composers=args.max_composers or default_limit(),
        redis_url=args.redis_url,
        workers=_workers(args),
        webhooks=webhooks,
        metrics_token=_metrics_token(),
    )


def _metrics_token() -> str | None:
    token = os.environ.get(METRICS_TOKEN_ENV, "").strip()
    if not token:
        return None
    if len(token) < _MIN_METRICS_TOKEN:
        raise UsageError(f"${METRICS_TOKEN_ENV} must be at least {_MIN_METRICS_TOKEN} characters")
    return token


def _workers(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 0:
        raise UsageError("--workers must be 0 or more")
    if not args.redis_url:
        if args.workers:
            raise UsageError("--workers needs --redis (without it the Worker runs in-process)")
        return 0
    return args.workers if args.workers is not None else os.cpu_count() or 1


def _print_banner(config: ServerConfig, base: str, data_dir_arg: Path | None) -> None:
    consultation_id = new_consultation_id()
    token = tokens.mint(
        config.secret,
        consultation_id=consultation_id,
        kind=ConsultationKind.joint,
        identity=tokens.new_identity(),
        name="Doctor",
        role=Role.doctor,
        ttl_s=DEFAULT_INVITE_TTL_S,
    )
    # The way this server was started (e.g. .venv/bin/teleconsult from `make run`), so the
    # printed command works as pasted even without an activated venv.
    program = _program()
    command = [program, "invite", "--consultation", consultation_id, "--role", "expert"]
    command += ["--name", "NAME", "--base-url", base]
    if data_dir_arg is not None:
        command += ["--data-dir", str(data_dir_arg)]
    print(f"teleconsult serving on {base}", flush=True)
    print(f"Demo consultation {consultation_id} (joint). The doctor's link:")
    print(f"  {join_url(base, token)}")
    print("Invite an expert or a patient to it (--role patient) with:")
    print(f"  {shlex.join(command)}", flush=True)
    media_on_loopback = all(a.listen.startswith("127.") for a in config.media.ice_addresses)
    if media_on_loopback and config.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            "warning: media listens on loopback only; add --ice-address with this machine's "
            "LAN or public IP so other machines can connect",
            file=sys.stderr,
        )


def _program() -> str:
    return sys.argv[0] if Path(sys.argv[0]).name == "teleconsult" else "teleconsult"


def _ice_hosts(media: MediaConfig) -> list[str]:
    return [ip for a in media.ice_addresses for ip in (a.listen, a.announced) if ip]


def _base_url_arg(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"{url!r} is not an http(s):// URL")
    return url.rstrip("/")


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    """The whole command line. The options of ``serve`` and ``worker`` in a named group
    are the configuration (signaling/cli/configuration.py): the group is the file's section."""
    parser = argparse.ArgumentParser(
        prog="teleconsult", description="Telemedicine video-consultation server."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the server")
    s.set_defaults(handler=serve)
    configuration.config_arg(s)
    general = s.add_argument_group("general")
    _data_dir_arg(general)
    configuration.log_level_arg(general)
    server = s.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on")
    server.add_argument("--port", type=int, default=8080, help="port to listen on")
    server.add_argument("--public-url", metavar="URL", help="base URL put in invite links")
    server.add_argument(
        "--tls-cert", type=configuration.path, metavar="FILE", help="certificate (PEM)"
    )
    server.add_argument(
        "--tls-key", type=configuration.path, metavar="FILE", help="its private key (PEM)"
    )
    server.add_argument(
        "--self-signed",
        action="store_true",
        help="serve HTTPS with a generated certificate (browsers need HTTPS for the camera "
        "anywhere but localhost)",
    )
    server.add_argument(
        "--max-composers",
        type=int,
        metavar="N",
        help="composer processes at once for recordings (default: all cores but one)",
    )
    media_args.add(s.add_argument_group("media"))
    records_cli.database_url_arg(s.add_argument_group("records"))
    redis = s.add_argument_group("redis")
    worker_cli.redis_url_arg(redis)
    redis.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="with --redis: media Worker processes to start here, one per core by default "
        "(0: they run elsewhere, `teleconsult worker`)",
    )
    webhooks_cli.settings_args(s.add_argument_group("webhooks"))

    c = sub.add_parser(
        "check-config",
        help="print the effective configuration (secrets masked); exit 2 on any problem",
        description="Reads --config (or $TELECONSULT_CONFIG) and the TELECONSULT_* variables "
        "as the command would, checks every value, and prints where each came from.",
    )
    c.set_defaults(handler=check_config)
    configuration.config_arg(c)
    c.add_argument(
        "--for",
        dest="check_for",
        choices=configuration.CONFIGURED_COMMANDS,
        default="serve",
        help="the command whose configuration to check (default: %(default)s)",
    )

    i = sub.add_parser("invite", help="print a join URL (one line on stdout)")
    i.set_defaults(handler=invite)
    i.add_argument("--consultation", metavar="ID", help="consultation id (default: a new one)")
    i.add_argument("--role", required=True, choices=[r.value for r in Role])
    i.add_argument("--name", required=True, help="display name shown to the others")
    i.add_argument("--identity", help="opaque identity (default: a new random one)")
    i.add_argument(
        "--kind",
        default=ConsultationKind.joint.value,
        choices=[k.value for k in ConsultationKind],
        help="(default: %(default)s)",
    )
    i.add_argument(
        "--ttl",
        type=int,
        default=DEFAULT_INVITE_TTL_S,
        metavar="SECONDS",
        help="validity (default: %(default)s)",
    )
    i.add_argument("--base-url", default=DEFAULT_BASE_URL, help="(default: %(default)s)")
    i.add_argument(
        "--no-waiting-room",
        action="store_true",
        help="let this person straight in (patients and observers otherwise wait for the "
        "doctor to admit them)",
    )
    _data_dir_arg(i)

    a = sub.add_parser("audit", help="check the audit log")
    a_sub = a.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    v = a_sub.add_parser(
        "verify", help="check every entry's MAC and the checkpoints; exit 1 on any problem"
    )
    v.set_defaults(handler=audit_verify)
    _data_dir_arg(v)

    r = recordings_cli.add_parser(sub)
    r.set_defaults(handler=recordings)
    _data_dir_arg(r)
    records_cli.database_url_arg(r)
    records_cli.add_parsers(sub, _data_dir_arg)
    frontdesk_cli.add_parsers(sub, _data_dir_arg)
    worker_cli.add_parser(sub, _data_dir_arg)
    cluster_cli.add_parser(sub)
    opinions_cli.add_parsers(sub, _data_dir_arg)
    webhooks_cli.add_parser(sub, _data_dir_arg)
    return parser


def _data_dir_arg(p: argparse._ActionsContainer) -> None:
    p.add_argument(
        "--data-dir",
        type=configuration.path,
        metavar="DIR",
        help="where the secret and certificates live (default: $TELECONSULT_DATA_DIR, "
        "else $XDG_DATA_HOME/teleconsult, else ~/.local/share/teleconsult)",
    )


if __name__ == "__main__":
    sys.exit(main())
