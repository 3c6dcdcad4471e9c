"""Sites, their departments, and partnerships (the medical alliance).

A partnership lets a requesting site ask one department of an expert hospital for
consultations. It is made or ended by that hospital's admin (or a platform admin): the
hospital decides whom it serves. An expert hospital may itself request from another one.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from rooms.records.access import Actor
from rooms.records.database import Database
from rooms.records.errors import Duplicate, Forbidden, InvalidInput, NotFound
from rooms.records.ids import new_id
from rooms.records.schema import departments, partnerships, sites

MAX_SITE_NAME = 200
MAX_DEPARTMENT_NAME = 100


class SiteKind(StrEnum):
    village_clinic = "village_clinic"
    township_health_centre = "township_health_centre"
    community_hospital = "community_hospital"
    nursing_home = "nursing_home"
    expert_hospital = "expert_hospital"


@dataclass(frozen=True)
class Site:
    id: str
    kind: SiteKind
    name: str
    created_at: datetime


@dataclass(frozen=True)
class Department:
    id: str
    site_id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class Partnership:
    id: str
    requester_site_id: str
    department_id: str
    # The expert hospital the department belongs to.
    expert_site_id: str
    created_at: datetime
    created_by: str | None
    ended_at: datetime | None
    ended_by: str | None

    @property
    def active(self) -> bool:
        return self.ended_at is None


def clean_name(value: str, field: str, limit: int) -> str:
    """A display text: trimmed, NFC, 1..limit characters, no control characters."""
    text = unicodedata.normalize("NFC", value.strip())
    if not text:
        raise InvalidInput(f"{field} is empty")
    if len(text) > limit:
        raise InvalidInput(f"{field} is longer than {limit} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text):
        raise InvalidInput(f"{field} contains control characters")
    return text


class Sites:
    def __init__(self, database: Database) -> None:
        self._db = database

    # --- sites

    async def create(
        self, actor: Actor, kind: SiteKind | str, name: str, *, now: datetime | None = None
    ) -> Site:
        actor.require_platform_admin()
        try:
            kind = SiteKind(kind)
        except ValueError:
            raise InvalidInput("kind is not a known kind of site") from None
        row = {
            "id": new_id("site"),
            "kind": kind.value,
            "name": clean_name(name, "name", MAX_SITE_NAME),
            "created_at": now or datetime.now(UTC),
        }
        async with self._db.engine.begin() as conn:
            await conn.execute(insert(sites).values(**row))
        return _site(row)

    async def get(self, site_id: str) -> Site:
        async with self._db.engine.connect() as conn:
            row = (
                (await conn.execute(select(sites).where(sites.c.id == site_id))).mappings().first()
            )
        if row is None:
            raise NotFound("no such site")
        return _site(row)

    async def list(self) -> list[Site]:
        """Every site: the directory (names and kinds, nothing about people in them)."""
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(select(sites).order_by(sites.c.name))).mappings().all()
        return [_site(r) for r in rows]

    # --- departments

    async def add_department(
        self, actor: Actor, site_id: str, name: str, *, now: datetime | None = None
    ) -> Department:
        actor.require_admin_of(site_id)
        await self.get(site_id)
        row = {
            "id": new_id("dept"),
            "site_id": site_id,
            "name": clean_name(name, "name", MAX_DEPARTMENT_NAME),
            "created_at": now or datetime.now(UTC),
        }
        try:
            async with self._db.engine.begin() as conn:
                await conn.execute(insert(departments).values(**row))
        except IntegrityError:
            raise Duplicate("this site has a department of that name already") from None
        return _department(row)

    async def department(self, department_id: str) -> Department:
        query = select(departments).where(departments.c.id == department_id)
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise NotFound("no such department")
        return _department(row)

    async def departments(self, site_id: str) -> list[Department]:
        query = (
            select(departments).where(departments.c.site_id == site_id).order_by(departments.c.name)
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_department(r) for r in rows]

    # --- partnerships

    async def partner(
        self,
        actor: Actor,
        requester_site_id: str,
        department_id: str,
        *,
        now: datetime | None = None,
    ) -> Partnership:
        """Let ``requester_site_id`` ask ``department_id``; reopens an ended partnership."""
        department = await self.department(department_id)
        actor.require_admin_of(department.site_id)
        expert = await self.get(department.site_id)
        if expert.kind is not SiteKind.expert_hospital:
            raise InvalidInput("only a department of an expert hospital takes requests")
        await self.get(requester_site_id)
        if requester_site_id == expert.id:
            raise InvalidInput("a hospital does not partner with itself")
        at = now or datetime.now(UTC)
        existing = await self._find(requester_site_id, department_id)
        if existing is None:
            row = {
                "id": new_id("ptn"),
                "requester_site_id": requester_site_id,
                "department_id": department_id,
                "created_at": at,
                "created_by": actor.id,
                "ended_at": None,
                "ended_by": None,
            }
            try:
                async with self._db.engine.begin() as conn:
                    await conn.execute(insert(partnerships).values(**row))
            except IntegrityError:
                pass  # made at the same moment elsewhere: that one stands
        elif not existing.active:
            async with self._db.engine.begin() as conn:
                await conn.execute(
                    update(partnerships)
                    .where(partnerships.c.id == existing.id)
                    .values(created_at=at, created_by=actor.id, ended_at=None, ended_by=None)
                )
        found = await self._find(requester_site_id, department_id)
        assert found is not None
        return found

    async def end_partnership(
        self, actor: Actor, partnership_id: str, *, now: datetime | None = None
    ) -> Partnership:
        found = await self.partnership(partnership_id)
        actor.require_admin_of(found.expert_site_id)
        if found.active:
            async with self._db.engine.begin() as conn:
                await conn.execute(
                    update(partnerships)
                    .where(partnerships.c.id == partnership_id, partnerships.c.ended_at.is_(None))
                    .values(ended_at=now or datetime.now(UTC), ended_by=actor.id)
                )
        return await self.partnership(partnership_id)

    async def partnership(self, partnership_id: str) -> Partnership:
        rows = await self._partnerships(partnerships.c.id == partnership_id)
        if not rows:
            raise NotFound("no such partnership")
        return rows[0]

    async def partnerships(self, site_id: str, *, include_ended: bool = False) -> list[Partnership]:
        """Partnerships in which ``site_id`` requests or serves."""
        where = or_(
            partnerships.c.requester_site_id == site_id, departments.c.site_id == site_id
        )
        if not include_ended:
            where = and_(where, partnerships.c.ended_at.is_(None))
        return await self._partnerships(where)

    async def may_request(self, requester_site_id: str, department_id: str) -> bool:
        """Whether the site may ask this department for a consultation now."""
        found = await self._find(requester_site_id, department_id)
        return found is not None and found.active

    def require_visible(self, actor: Actor, partnership: Partnership) -> None:
        """Only the two sites of a partnership (and platform admins) see it."""
        if not (
            actor.platform_admin
            or actor.site_id in (partnership.requester_site_id, partnership.expert_site_id)
        ):
            raise Forbidden("this partnership is not one of your site's")

    async def _find(self, requester_site_id: str, department_id: str) -> Partnership | None:
        rows = await self._partnerships(
            and_(
                partnerships.c.requester_site_id == requester_site_id,
                partnerships.c.department_id == department_id,
            )
        )
        return rows[0] if rows else None

    async def _partnerships(self, where: object) -> list[Partnership]:
        query = (
            select(partnerships, departments.c.site_id.label("expert_site_id"))
            .join(departments, departments.c.id == partnerships.c.department_id)
            .where(where)  # type: ignore[arg-type]
            .order_by(partnerships.c.created_at, partnerships.c.id)
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            Partnership(
                id=r["id"],
                requester_site_id=r["requester_site_id"],
                department_id=r["department_id"],
                expert_site_id=r["expert_site_id"],
                created_at=r["created_at"],
                created_by=r["created_by"],
                ended_at=r["ended_at"],
                ended_by=r["ended_by"],
            )
            for r in rows
        ]


def _site(row: object) -> Site:
    r = dict(row)  # type: ignore[call-overload]
    return Site(id=r["id"], kind=SiteKind(r["kind"]), name=r["name"], created_at=r["created_at"])


def _department(row: object) -> Department:
    r = dict(row)  # type: ignore[call-overload]
    return Department(
        id=r["id"], site_id=r["site_id"], name=r["name"], created_at=r["created_at"]
    )
