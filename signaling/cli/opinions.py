"""``teleconsult opinions verify [--consultation ID]``: check every signed expert opinion.

Each stored opinion is opened with its consultation's data key, checked to be the canonical
form of what its record says, and its Ed25519 signature verified with the author's public key
(rooms/records/opinions.py). One line per opinion that fails, naming its id, consultation and
version and what failed (never its text); opinions of consultations shredded at the end of
retention are counted, not failures. Exit 1 on any failure, 0 otherwise. It never creates a
master key: one made up on the spot would only make every check fail.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from recordings.crypto import load_master_key
from recordings.errors import RecordingError
from recordings.store import RecordingStore
from rooms.consultation import validate_consultation_id
from rooms.errors import InvalidConsultationId
from rooms.records.clinic import Clinic
from rooms.records.database import Database, resolve_url
from rooms.records.frontdesk import FrontDesk
from rooms.records.opinions import Check
from signaling.cli.records import CommandError, database_url_arg
from signaling.console.cipher import KeystoreCipher
from signaling.keys import default_data_dir

_FAILED, _ENVIRONMENT = 1, 1


def add_parsers(sub: argparse._SubParsersAction, data_dir_arg: Callable[..., None]) -> None:  # type: ignore[type-arg]
    o = sub.add_parser("opinions", help="signed expert opinions")
    o_sub = o.add_subparsers(dest="opinions_command", required=True, metavar="COMMAND")
    v = o_sub.add_parser(
        "verify", help="check every opinion's signature and stored bytes; exit 1 on any failure"
    )
    v.add_argument("--consultation", metavar="ID", help="only this consultation's")
    v.set_defaults(handler=verify)
    database_url_arg(v)
    data_dir_arg(v)


def verify(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir or default_data_dir()
    if args.consultation is not None:
        try:
            validate_consultation_id(args.consultation)
        except InvalidConsultationId as exc:
            raise CommandError(f"--consultation: {exc}") from None
    try:
        master_key = load_master_key(data_dir)
    except RecordingError as exc:
        print(f"teleconsult: error: {exc}", file=sys.stderr)
        return _ENVIRONMENT

    async def main() -> int:
        database = Database(resolve_url(data_dir, args.database_url))
        try:
            await database.ensure_current()
            desk = FrontDesk.build(database, master_key)
            store = RecordingStore(data_dir, master_key)
            clinic = Clinic.build(database, desk, KeystoreCipher(store.keystore))
            results = await clinic.opinions.verify(args.consultation)
        finally:
            await database.close()
        failed = [r for r in results if r.failed]
        for r in failed:
            print(
                f"FAILED {r.opinion_id} consultation {r.consultation_id} version {r.version}: "
                f"{r.check.value}"
            )
        shredded = sum(1 for r in results if r.check is Check.shredded)
        ok = sum(1 for r in results if r.check is Check.ok)
        print(
            f"{len(results)} opinions checked: {ok} verified, {len(failed)} failed, "
            f"{shredded} shredded"
        )
        return _FAILED if failed else 0

    return asyncio.run(main())
