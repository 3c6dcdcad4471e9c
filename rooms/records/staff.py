"""Staff accounts: username, password (Argon2id), role at a site, signing key pair.

Usernames are unique across the installation and stored in lower case. Display names are
not patient data, but like every name they stay out of logs and reprs: logs carry staff ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from rooms.records.access import Actor
from rooms.records.database import Database
from rooms.records.errors import Duplicate, Forbidden, InvalidInput, NotFound
from rooms.records.ids import new_id
from rooms.records.passwords import Passwords
from rooms.records.schema import staff
from rooms.records.signing_keys import StaffKeyring
from rooms.records.sites import clean_name
from rooms.roles import StaffRole

MAX_DISPLAY_NAME = 200
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")


def normalize_username(value: str) -> str:
    """Lower case and trimmed; raises InvalidInput (without echoing it) if malformed."""
    username = value.strip().lower()
    if not _USERNAME.match(username):
        raise InvalidInput(
            "a username is 3-64 characters: letters a-z, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return username


@dataclass(frozen=True)
class StaffMember:
    id: str
    username: str
    display_name: str = field(repr=False)
    site_id: str | None
    role: StaffRole
    platform_admin: bool
    disabled_at: datetime | None
    session_generation: int
    public_key: bytes = field(repr=False)
    private_key_sealed: bytes = field(repr=False)
    password_hash: str = field(repr=False)
    created_at: datetime
    password_changed_at: datetime

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    @property
    def actor(self) -> Actor:
        return Actor(
            id=self.id, site_id=self.site_id, role=self.role, platform_admin=self.platform_admin
        )


class Staff:
    def __init__(self, database: Database, passwords: Passwords, keyring: StaffKeyring) -> None:
        self._db = database
        self.passwords = passwords
        self.keyring = keyring

    async def add(
        self,
        actor: Actor,
        *,
        username: str,
        display_name: str,
        password: str,
        role: StaffRole | str,
        site_id: str | None,
        platform_admin: bool = False,
        now: datetime | None = None,
    ) -> StaffMember:
        if platform_admin:
            actor.require_platform_admin()
        elif site_id is None:
            raise InvalidInput("a staff member belongs to a site")
        if site_id is not None:
            actor.require_admin_of(site_id)
        try:
            role = StaffRole(role)
        except ValueError:
            raise InvalidInput("role is not admin, doctor, nurse or expert") from None
        username = normalize_username(username)
        display_name = clean_name(display_name, "display name", MAX_DISPLAY_NAME)
        password_hash = await self.passwords.hash(password)
        staff_id = new_id("stf")
        public_key, sealed = self.keyring.new_pair(staff_id)
        at = now or datetime.now(UTC)
        row = {
            "id": staff_id,
            "username": username,
            "display_name": display_name,
            "password_hash": password_hash,
            "site_id": site_id,
            "role": role.value,
            "platform_admin": platform_admin,
            "disabled_at": None,
            "session_generation": 0,
            "public_key": public_key,
            "private_key_sealed": sealed,
            "created_at": at,
            "password_changed_at": at,
        }
        try:
            async with self._db.engine.begin() as conn:
                await conn.execute(insert(staff).values(**row))
        except IntegrityError:
            # The username is the one unique column a caller chooses; a missing site would
            # have been refused by require_admin_of only for non-platform actors.
            if await self.by_username(username) is not None:
                raise Duplicate("this username is taken") from None
            raise NotFound("no such site") from None
        return _member(row)

    async def get(self, staff_id: str) -> StaffMember:
        found = await self._one(staff.c.id == staff_id)
        if found is None:
            raise NotFound("no such staff member")
        return found

    async def by_username(self, username: str) -> StaffMember | None:
        try:
            username = normalize_username(username)
        except InvalidInput:
            return None
        return await self._one(staff.c.username == username)

    async def count(self) -> int:
        async with self._db.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(staff))).scalar_one())

    async def list(self, actor: Actor, site_id: str | None) -> list[StaffMember]:
        """A site's staff (``None``: the platform admins without a site; platform only)."""
        if site_id is None:
            actor.require_platform_admin()
            where = staff.c.site_id.is_(None)
        else:
            actor.require_admin_of(site_id)
            where = staff.c.site_id == site_id
        query = select(staff).where(where).order_by(staff.c.username)
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_member(r) for r in rows]

    async def manageable(self, actor: Actor, staff_id: str) -> StaffMember:
        """The member, if ``actor`` administers them; NotFound for anyone else's, so ids of
        other sites' staff cannot be probed."""
        member = await self.get(staff_id)
        if member.platform_admin and not actor.platform_admin:
            raise NotFound("no such staff member")
        if not member.platform_admin and not actor.is_admin_of(member.site_id):
            raise NotFound("no such staff member")
        return member

    async def disable(
        self, actor: Actor, staff_id: str, *, now: datetime | None = None
    ) -> StaffMember:
        member = await self.manageable(actor, staff_id)
        if member.id == actor.id:
            raise Forbidden("you cannot disable your own account")
        async with self._db.engine.begin() as conn:
            await conn.execute(
                update(staff)
                .where(staff.c.id == staff_id, staff.c.disabled_at.is_(None))
                .values(
                    disabled_at=now or datetime.now(UTC),
                    session_generation=staff.c.session_generation + 1,
                )
            )
        return await self.get(staff_id)

    async def enable(self, actor: Actor, staff_id: str) -> StaffMember:
        await self.manageable(actor, staff_id)
        async with self._db.engine.begin() as conn:
            await conn.execute(update(staff).where(staff.c.id == staff_id).values(disabled_at=None))
        return await self.get(staff_id)

    async def set_password(
        self,
        actor: Actor,
        staff_id: str,
        password: str,
        *,
        current_password: str | None = None,
        now: datetime | None = None,
    ) -> StaffMember:
        """Set a password: your own (the current one is required), or as its admin. Every
        session of the account ends."""
        if staff_id == actor.id:
            member = await self.get(staff_id)
            if current_password is None or not await self.passwords.verify(
                member.password_hash, current_password
            ):
                raise Forbidden("the current password is not right")
        else:
            await self.manageable(actor, staff_id)
        password_hash = await self.passwords.hash(password)
        async with self._db.engine.begin() as conn:
            await conn.execute(
                update(staff)
                .where(staff.c.id == staff_id)
                .values(
                    password_hash=password_hash,
                    password_changed_at=now or datetime.now(UTC),
                    session_generation=staff.c.session_generation + 1,
                )
            )
        return await self.get(staff_id)

    async def rehash(self, staff_id: str, old_hash: str, password: str) -> None:
        """Store a hash with today's parameters after a successful login (if the old one
        used weaker ones); sessions stay."""
        new_hash = await self.passwords.hash(password)
        async with self._db.engine.begin() as conn:
            await conn.execute(
                update(staff)
                .where(staff.c.id == staff_id, staff.c.password_hash == old_hash)
                .values(password_hash=new_hash)
            )

    async def end_sessions(self, staff_id: str) -> None:
        """Every session cookie of this account stops working (logout, logout everywhere)."""
        async with self._db.engine.begin() as conn:
            await conn.execute(
                update(staff)
                .where(staff.c.id == staff_id)
                .values(session_generation=staff.c.session_generation + 1)
            )

    def sign(self, member: StaffMember, message: bytes) -> bytes:
        return self.keyring.sign(member.id, member.private_key_sealed, message)

    async def _one(self, where: object) -> StaffMember | None:
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(select(staff).where(where))).mappings().first()  # type: ignore[arg-type]
        return _member(row) if row is not None else None


def _member(row: object) -> StaffMember:
    r = dict(row)  # type: ignore[call-overload]
    return StaffMember(
        id=r["id"],
        username=r["username"],
        display_name=r["display_name"],
        site_id=r["site_id"],
        role=StaffRole(r["role"]),
        platform_admin=bool(r["platform_admin"]),
        disabled_at=r["disabled_at"],
        session_generation=int(r["session_generation"]),
        public_key=bytes(r["public_key"]),
        private_key_sealed=bytes(r["private_key_sealed"]),
        password_hash=r["password_hash"],
        created_at=r["created_at"],
        password_changed_at=r["password_changed_at"],
    )
