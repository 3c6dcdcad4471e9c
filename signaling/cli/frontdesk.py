"""``teleconsult sites ...`` and ``teleconsult staff ...``: the front desk from a shell, and
the first admin that ``serve`` makes on a database without staff.

The operator at a shell can read the database already, so commands act as a platform admin
(``cli:<user>`` in the records they write). Output names ids, usernames, roles and site names;
never a password, except the one line that hands the first admin theirs, once, on the
terminal that started the server (never in a log).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from recordings.crypto import load_or_create_master_key
from rooms.records.access import Actor
from rooms.records.database import Database, resolve_url
from rooms.records.errors import Duplicate, RecordError
from rooms.records.frontdesk import FrontDesk
from rooms.records.passwords import random_password, validate_password
from rooms.records.sites import SiteKind
from rooms.roles import StaffRole
from signaling.cli.records import CommandError, database_url_arg
from signaling.keys import default_data_dir

FIRST_ADMIN = "admin"


def add_parsers(sub: argparse._SubParsersAction, data_dir_arg: Callable[..., None]) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("sites", help="sites, departments and partnerships")
    s_sub = s.add_subparsers(dest="sites_command", required=True, metavar="COMMAND")
    add = s_sub.add_parser("add", help="create a site; prints its id")
    add.add_argument("--kind", required=True, choices=[k.value for k in SiteKind])
    add.add_argument("--name", required=True)
    s_sub.add_parser("list", help="every site: id, kind, name")
    dep = s_sub.add_parser("departments", help="a site's departments (or add one)")
    dep.add_argument("site", metavar="SITE_ID")
    dep.add_argument("--add", metavar="NAME", help="add a department of this name")
    partner = s_sub.add_parser(
        "partner", help="let a site request consultations of an expert hospital's department"
    )
    partner.add_argument("--requester", required=True, metavar="SITE_ID")
    partner.add_argument("--department", required=True, metavar="DEPARTMENT_ID")
    partner.add_argument("--end", action="store_true", help="end the partnership instead")
    for p in s_sub.choices.values():
        p.set_defaults(handler=sites)
        database_url_arg(p)
        data_dir_arg(p)

    st = sub.add_parser("staff", help="staff accounts")
    st_sub = st.add_subparsers(dest="staff_command", required=True, metavar="COMMAND")
    sa = st_sub.add_parser("add", help="create a staff account; prints its id")
    sa.add_argument("--username", required=True)
    sa.add_argument("--name", required=True, help="display name (never logged)")
    sa.add_argument("--role", default=StaffRole.admin.value, choices=[r.value for r in StaffRole])
    sa.add_argument("--site", metavar="SITE_ID", help="the site (optional with --admin)")
    sa.add_argument(
        "--admin", action="store_true", help="a platform admin: creates sites, admin of every site"
    )
    _password_arg(sa)
    sl = st_sub.add_parser("list", help="staff of a site (platform admins without --site)")
    sl.add_argument("--site", metavar="SITE_ID")
    for verb, text in (
        ("disable", "disable an account (its sessions end at once)"),
        ("enable", "enable a disabled account"),
        ("unlock", "end a lockout after failed logins"),
        ("passwd", "set a password (every session of the account ends)"),
    ):
        p = st_sub.add_parser(verb, help=text)
        p.add_argument("username")
        if verb == "passwd":
            _password_arg(p)
    for p in st_sub.choices.values():
        p.set_defaults(handler=staff)
        database_url_arg(p)
        data_dir_arg(p)


def _password_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (default: ask twice)",
    )


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise CommandError("the two passwords differ")
    else:
        raise CommandError("no terminal to ask for a password: use --password-stdin")
    try:
        return validate_password(password)
    except RecordError as exc:
        raise CommandError(str(exc)) from None


def _run(args: argparse.Namespace, body: Callable[[FrontDesk, Actor], Awaitable[int]]) -> int:
    data_dir: Path = args.data_dir or default_data_dir()

    async def main() -> int:
        database = Database(resolve_url(data_dir, args.database_url))
        try:
            await database.ensure_current()
            desk = FrontDesk.build(database, load_or_create_master_key(data_dir))
            return await body(desk, Actor.command_line(getpass.getuser()))
        except RecordError as exc:
            raise CommandError(str(exc)) from None
        finally:
            await database.close()

    return asyncio.run(main())


def sites(args: argparse.Namespace) -> int:
    async def body(desk: FrontDesk, actor: Actor) -> int:
        command = args.sites_command
        if command == "add":
            print((await desk.sites.create(actor, args.kind, args.name)).id)
        elif command == "list":
            for site in await desk.sites.list():
                print(f"{site.id}\t{site.kind.value}\t{site.name}")
        elif command == "departments":
            if args.add is not None:
                print((await desk.sites.add_department(actor, args.site, args.add)).id)
            else:
                await desk.sites.get(args.site)
                for d in await desk.sites.departments(args.site):
                    print(f"{d.id}\t{d.name}")
        else:
            if args.end:
                found = [
                    p
                    for p in await desk.sites.partnerships(args.requester)
                    if p.department_id == args.department
                ]
                if not found:
                    raise CommandError("no such partnership")
                await desk.sites.end_partnership(actor, found[0].id)
                print(f"ended {found[0].id}")
            else:
                print((await desk.sites.partner(actor, args.requester, args.department)).id)
        return 0

    return _run(args, body)


def staff(args: argparse.Namespace) -> int:
    command = args.staff_command
    password = _read_password(args) if command in ("add", "passwd") else None

    async def body(desk: FrontDesk, actor: Actor) -> int:
        if command == "add":
            member = await desk.staff.add(
                actor,
                username=args.username,
                display_name=args.name,
                password=password or "",
                role=args.role,
                site_id=args.site,
                platform_admin=args.admin,
            )
            print(member.id)
            return 0
        if command == "list":
            for m in await desk.staff.list(actor, args.site):
                state = "disabled" if m.disabled else "active"
                flag = "\tplatform-admin" if m.platform_admin else ""
                print(f"{m.id}\t{m.username}\t{m.role.value}\t{state}{flag}")
            return 0
        member = await desk.staff.by_username(args.username)
        if member is None:
            raise CommandError("no such staff member")
        if command == "disable":
            await desk.staff.disable(actor, member.id)
        elif command == "enable":
            await desk.staff.enable(actor, member.id)
        elif command == "unlock":
            await desk.throttle.unlock(member.username)
        else:
            await desk.staff.set_password(actor, member.id, password or "")
        print(f"{command}: {member.id}")
        return 0

    return _run(args, body)


# ------------------------------------------------------------------ the first admin


async def make_first_admin(data_dir: Path, database_url: str | None) -> tuple[str, str] | None:
    """On a records database without any staff, a platform admin ``admin`` with a random
    password: (username, password) to show once. None when there is staff already."""
    database = Database(resolve_url(data_dir, database_url))
    try:
        desk = FrontDesk.build(database, load_or_create_master_key(data_dir))
        if await desk.staff.count() > 0:
            return None
        password = random_password()
        try:
            await desk.staff.add(
                Actor.command_line("serve"),
                username=FIRST_ADMIN,
                display_name="Administrator",
                password=password,
                role=StaffRole.admin,
                site_id=None,
                platform_admin=True,
            )
        except Duplicate:
            return None  # another node made it at the same moment; it shows its own
        return FIRST_ADMIN, password
    finally:
        await database.close()


def print_first_admin(base_url: str, credentials: tuple[str, str], program: str) -> None:
    username, password = credentials
    print(f"First start: log in at {base_url}/login as {username!r} with the password {password}")
    print(
        "  (shown this once: change it in the console, or with "
        f"`{program} staff passwd {username}`)",
        flush=True,
    )
