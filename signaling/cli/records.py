"""``teleconsult db upgrade|status`` and ``teleconsult revoke``: the records database from a
shell, and the records part of ``recordings purge``. Output names opaque ids only, never a
display name."""

from __future__ import annotations

import argparse
import asyncio
import getpass
from pathlib import Path

from recordings.store import RecordingStore
from rooms.consultation import validate_consultation_id
from rooms.errors import InvalidConsultationId
from rooms.records.database import Database, head_revision, resolve_url, safe_url
from rooms.records.quality import CallQuality
from rooms.records.revocations import Revocations, Scope
from signaling import tokens
from signaling.keys import default_data_dir, load_or_create_secret


class CommandError(Exception):
    """A bad argument or an unusable token; shown as is (never a name, never the token)."""


def add_parsers(sub: argparse._SubParsersAction, data_dir_arg) -> None:  # type: ignore[type-arg]
    d = sub.add_parser("db", help="the records database: migrations")
    d.set_defaults(handler=db)
    d.add_argument("action", choices=["upgrade", "status"])
    database_url_arg(d)
    data_dir_arg(d)

    r = sub.add_parser(
        "revoke",
        help="revoke a join link, a person in a consultation, or the whole consultation",
        description="A revoked link stops working at once: a running server ends the sessions "
        "it concerns within a few seconds. Revoking a consultation ends it for everyone.",
    )
    r.set_defaults(handler=revoke)
    target = r.add_mutually_exclusive_group(required=True)
    target.add_argument("--token", metavar="TOKEN_OR_URL", help="this one link")
    target.add_argument("--identity", metavar="ID", help="this person (the token's sub)")
    target.add_argument(
        "--whole-consultation", action="store_true", help="end the consultation for everyone"
    )
    r.add_argument("--consultation", metavar="ID", help="with --identity/--whole-consultation")
    database_url_arg(r)
    data_dir_arg(r)


def database_url_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="records database (default: $TELECONSULT_DATABASE_URL, else SQLite in the data "
        "dir); e.g. postgresql+asyncpg://user@host/teleconsult",
    )


def _data_dir(args: argparse.Namespace) -> Path:
    return args.data_dir or default_data_dir()


def db(args: argparse.Namespace) -> int:
    return asyncio.run(_db(args.action, _data_dir(args), args.database_url))


async def _db(action: str, data_dir: Path, url: str | None) -> int:
    database = Database(resolve_url(data_dir, url))
    try:
        if action == "upgrade":
            before, after = await database.upgrade()
            print(f"{safe_url(database.url)}: {before or 'empty'} -> {after}")
            return 0
        current, head = await database.revision(), head_revision()
        state = "up to date" if current == head else "needs `teleconsult db upgrade`"
        print(f"{safe_url(database.url)}: at {current or 'none'}, head {head}: {state}")
        return 0 if current == head else 1
    finally:
        await database.close()


def revoke(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    if args.token is not None:
        token = args.token.rstrip("/").rsplit("/", 1)[-1]
        try:
            grant = tokens.verify(load_or_create_secret(data_dir), token, check_times=False)
        except tokens.TokenError as exc:
            raise CommandError(f"not a token of this server: {exc}") from None
        if grant.token_id is not None:
            consultation, scope, subject = grant.consultation_id, Scope.token, grant.token_id
        else:
            # Minted elsewhere without a jti: the person is the narrowest target there is.
            consultation, scope, subject = grant.consultation_id, Scope.identity, grant.identity
    else:
        if args.consultation is None:
            raise CommandError("--consultation is required with --identity/--whole-consultation")
        try:
            consultation = validate_consultation_id(args.consultation)
        except InvalidConsultationId as exc:
            raise CommandError(f"--consultation: {exc}") from None
        if args.identity is not None:
            scope, subject = Scope.identity, args.identity
        else:
            scope, subject = Scope.consultation, ""
    reason = {"consultation": "ended", "identity": "removed", "token": "revoked"}[scope]
    return asyncio.run(
        _revoke(data_dir, args.database_url, consultation, scope, subject, reason)
    )


async def _revoke(
    data_dir: Path, url: str | None, consultation: str, scope: Scope, subject: str, reason: str
) -> int:
    database = Database(resolve_url(data_dir, url))
    try:
        await database.ensure_current()
        revocation = await Revocations(database).revoke(
            consultation, scope, subject, reason=reason, by=f"cli:{getpass.getuser()}"
        )
    finally:
        await database.close()
    print(f"revoked ({revocation.scope}) in consultation {revocation.consultation_id}")
    return 0


def purge_call_quality(data_dir: Path, url: str | None) -> int:
    """Delete the call quality samples of every consultation whose data key is gone, after
    ``recordings purge``: the ones it just purged, and any an earlier purge left behind
    (the database unreachable then). The number of samples deleted."""
    return asyncio.run(_purge_call_quality(data_dir, url))


async def _purge_call_quality(data_dir: Path, url: str | None) -> int:
    database = Database(resolve_url(data_dir, url))
    try:
        if database.is_new_embedded:
            return 0  # no records at all
        await database.ensure_current()
        quality = CallQuality(database)
        keystore = RecordingStore(data_dir).keystore
        gone = [c for c in await quality.consultations() if not keystore.has_key(c)]
        return await quality.purge(gone)
    finally:
        await database.close()
