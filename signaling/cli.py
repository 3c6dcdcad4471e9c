"""``teleconsult serve`` and ``teleconsult invite``.

Nothing here prints or logs a display name: the only place one appears is inside the token of
a join URL, which is the point of printing it.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit

from media.config import IceAddress, IceServer, MediaConfig
from recordings import cli as recordings_cli
from rooms.consultation import ConsultationKind, new_consultation_id, validate_consultation_id
from rooms.errors import InvalidConsultationId
from rooms.roles import Role
from signaling import tokens
from signaling.config import ServerConfig
from signaling.keys import SecretError, default_data_dir, load_or_create_secret
from signaling.tls import self_signed

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
# Long enough for a clinic's half-day session, short enough that a forwarded link goes stale.
DEFAULT_INVITE_TTL_S = 8 * 3600
_ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")
# Exit codes: 2 for a bad command line (argparse's convention), 1 for a bad environment.
_USAGE, _ENVIRONMENT = 2, 1


class UsageError(Exception):
    """A bad argument; the message is shown as is and must not echo a name or an id."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        # argparse exits on --help and on errors; main() returns codes instead of exiting.
        return exit_.code if isinstance(exit_.code, int) else _USAGE
    try:
        return int(args.handler(args))
    except UsageError as e:
        print(f"teleconsult: error: {e}", file=sys.stderr)
        return _USAGE
    except (SecretError, OSError) as e:
        print(f"teleconsult: error: {e}", file=sys.stderr)
        return _ENVIRONMENT


# ------------------------------------------------------------------ recordings


def recordings(args: argparse.Namespace) -> int:
    """``teleconsult recordings list|verify|purge|hold|release|compose``."""
    return recordings_cli.run(args, args.data_dir or default_data_dir())


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
    base = base_url(config)
    _print_banner(config, base, args.data_dir)
    # Imported here: the app pulls in aiortc and av, which ``invite`` has no use for.
    from signaling.app import run

    run(config)
    return 0


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


def _server_config(args: argparse.Namespace) -> ServerConfig:
    data_dir: Path = args.data_dir or default_data_dir()
    media = MediaConfig(
        ice_addresses=_ice_addresses(args.ice_address) or MediaConfig().ice_addresses,
        ice_servers=_ice_servers(args.ice_server, args.ice_username, args.ice_credential),
        video_codec=args.video_codec,
        max_video_bitrate=args.max_video_kbps * 1000,
    )
    if args.max_video_kbps < 100:
        raise UsageError("--max-video-kbps must be at least 100")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    public_url = _base_url_arg(args.public_url) if args.public_url else None
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
    )


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
    program = sys.argv[0] if Path(sys.argv[0]).name == "teleconsult" else "teleconsult"
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


def _ice_addresses(values: list[str]) -> tuple[IceAddress, ...]:
    out = []
    for text in values:
        try:
            address = IceAddress.parse(text)
            for ip in (address.listen, address.announced):
                if ip is not None:
                    ipaddress.ip_address(ip)
        except ValueError:
            raise UsageError(
                f"--ice-address {text!r}: expected IP or LISTEN_IP=ANNOUNCED_IP"
            ) from None
        out.append(address)
    return tuple(out)


def _ice_servers(
    urls: list[str], username: str | None, credential: str | None
) -> tuple[IceServer, ...]:
    if (username is None) != (credential is None):
        raise UsageError("--ice-username and --ice-credential go together")
    servers = []
    for url in urls:
        if not url.startswith(_ICE_SCHEMES):
            # Not echoed: a TURN URL may carry credentials.
            raise UsageError("each --ice-server must start with stun:, stuns:, turn: or turns:")
        if url.startswith(("turn:", "turns:")):
            if username is None:
                raise UsageError("a turn: server needs --ice-username and --ice-credential")
            servers.append(IceServer(urls=(url,), username=username, credential=credential))
        else:
            servers.append(IceServer(urls=(url,)))
    if username is not None and not any(s.username for s in servers):
        raise UsageError("--ice-username/--ice-credential given but no turn: --ice-server")
    return tuple(servers)


def _ice_hosts(media: MediaConfig) -> list[str]:
    return [ip for a in media.ice_addresses for ip in (a.listen, a.announced) if ip]


def _base_url_arg(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"{url!r} is not an http(s):// URL")
    return url.rstrip("/")


# ------------------------------------------------------------------ parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="teleconsult", description="Telemedicine video-consultation server."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the server")
    s.set_defaults(handler=serve)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    s.add_argument("--port", type=int, default=8080, help="port to listen on (%(default)s)")
    _data_dir_arg(s)
    s.add_argument(
        "--ice-address",
        action="append",
        default=[],
        metavar="IP[=ANNOUNCED]",
        help="address for media (repeatable); IP=ANNOUNCED behind 1:1 NAT. Default 127.0.0.1",
    )
    s.add_argument(
        "--ice-server",
        action="append",
        default=[],
        metavar="URL",
        help="STUN/TURN server given to the media worker and to clients (repeatable)",
    )
    s.add_argument("--ice-username", help="username for the turn: servers")
    s.add_argument("--ice-credential", help="credential for the turn: servers")
    s.add_argument("--video-codec", choices=["VP8", "H264"], default="VP8")
    s.add_argument(
        "--max-video-kbps",
        type=int,
        default=MediaConfig.max_video_bitrate // 1000,
        metavar="KBPS",
        help="the most each video publisher is asked to send (default: %(default)s)",
    )
    s.add_argument("--public-url", metavar="URL", help="base URL put in invite links")
    s.add_argument("--tls-cert", type=Path, metavar="FILE")
    s.add_argument("--tls-key", type=Path, metavar="FILE")
    s.add_argument(
        "--self-signed",
        action="store_true",
        help="serve HTTPS with a generated certificate (browsers need HTTPS for the camera "
        "anywhere but localhost)",
    )
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

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
    _data_dir_arg(i)

    r = recordings_cli.add_parser(sub)
    r.set_defaults(handler=recordings)
    _data_dir_arg(r)
    return parser


def _data_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="where the secret and certificates live (default: $TELECONSULT_DATA_DIR, "
        "else $XDG_DATA_HOME/teleconsult, else ~/.local/share/teleconsult)",
    )


if __name__ == "__main__":
    sys.exit(main())
