"""Signed expert opinions: structured, versioned, acknowledged, verifiable.

An expert of the consultation (one who accepted it, or was added by name) files an opinion
of four fields. On filing, a canonical serialisation (sorted-key JSON, UTF-8, no whitespace)
of the fields' text with the consultation id, the opinion's id and version, the one it
supersedes, the author's staff id and key id and the time, is signed with the author's own
Ed25519 key (rooms/records/signing_keys.py), and that exact message is stored sealed with the
consultation's data key beside its signature. An amendment is a new signed version naming
the one it supersedes; the old one stays. The requesting site's doctor acknowledges a
version. ``verify`` (``teleconsult opinions verify``) opens every stored message, checks it
is the canonical form of what the row says, and checks its signature with the author's
public key: a changed byte in the ciphertext, the signature or the row fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from rooms.records.access import Actor
from rooms.records.clinical import ClinicalCipher, Sealer, Shredded, Unreadable
from rooms.records.consultations import Consultations
from rooms.records.database import Database
from rooms.records.errors import Conflict, Forbidden, NotFound
from rooms.records.ids import new_id
from rooms.records.requests import clean_text
from rooms.records.schema import opinions
from rooms.records.signing_keys import key_id, verify
from rooms.records.staff import Staff, StaffMember
from rooms.records.timeline import EventKind, append
from rooms.roles import StaffRole

FIELDS = ("findings", "impression", "recommendations", "follow_up")
MAX_FIELD = 8000
# The layout of the signed message; a later one gets a new number.
FORMAT = "teleconsult-opinion-v1"


@dataclass(frozen=True)
class OpinionFields:
    findings: str = field(repr=False)
    impression: str = field(repr=False)
    recommendations: str = field(repr=False)
    # Optional: "" when no follow-up is needed.
    follow_up: str = field(repr=False, default="")

    @classmethod
    def checked(
        cls, *, findings: str, impression: str, recommendations: str, follow_up: str = ""
    ) -> OpinionFields:
        return cls(
            findings=clean_text(findings, "findings", MAX_FIELD),
            impression=clean_text(impression, "impression", MAX_FIELD),
            recommendations=clean_text(recommendations, "recommendations", MAX_FIELD),
            follow_up=clean_text(follow_up, "follow-up", MAX_FIELD) if follow_up.strip() else "",
        )

    def as_dict(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in FIELDS}


@dataclass(frozen=True)
class Opinion:
    id: str
    consultation_id: str
    version: int
    supersedes: str | None
    author_id: str
    key_id: str
    signed_at: datetime
    body_sealed: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    acknowledged_by: str | None
    acknowledged_at: datetime | None


class Check(StrEnum):
    ok = "ok"
    # The consultation's data key was destroyed at the end of retention: nothing to check.
    shredded = "shredded"
    # The sealed message does not open: its bytes (or the row's ids) were altered.
    unreadable = "unreadable"
    # The message opens but is not what the row says, or not in canonical form.
    mismatch = "mismatch"
    # The author's account, or the key the opinion names, is not the author's.
    unknown_key = "unknown_key"
    bad_signature = "bad_signature"


@dataclass(frozen=True)
class Verification:
    opinion_id: str
    consultation_id: str
    version: int
    check: Check

    @property
    def failed(self) -> bool:
        return self.check not in (Check.ok, Check.shredded)


@dataclass(frozen=True)
class Reading:
    """An opinion as shown: its fields when they open and verify, and the check's result."""

    opinion: Opinion
    check: Check
    fields: OpinionFields | None = field(repr=False)


def canonical(message: dict[str, Any]) -> bytes:
    return json.dumps(
        message, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _message(row: Opinion | dict[str, Any], fields: OpinionFields) -> dict[str, Any]:
    r = row if isinstance(row, dict) else row.__dict__
    return {
        "format": FORMAT,
        "opinion": r["id"],
        "consultation": r["consultation_id"],
        "version": r["version"],
        "supersedes": r["supersedes"],
        "author": r["author_id"],
        "key": r["key_id"],
        "signed_at": _time(r["signed_at"]),
        "fields": fields.as_dict(),
    }


class Opinions:
    def __init__(
        self,
        database: Database,
        consultations: Consultations,
        staff: Staff,
        cipher: ClinicalCipher,
    ) -> None:
        self._db = database
        self._consultations = consultations
        self._staff = staff
        self._sealer = Sealer(cipher, "opinions")

    async def file(
        self,
        author: StaffMember,
        consultation_id: str,
        fields: OpinionFields,
        *,
        supersedes: str | None = None,
        now: datetime | None = None,
    ) -> Opinion:
        """File the first opinion, or amend the latest (``supersedes`` = its id)."""
        actor = author.actor
        c = await self._consultations.get(actor, consultation_id)
        if author.disabled or author.id not in await self._consultations.experts(c.id):
            raise Forbidden("only the consultation's experts file an opinion")
        versions = await self._rows(opinions.c.consultation_id == c.id)
        latest = versions[-1] if versions else None
        if latest is None and supersedes is not None:
            raise NotFound("no such opinion")
        if latest is not None and supersedes != latest.id:
            raise Conflict("a newer version was filed: read it, then amend", code="stale_version")
        at = now or datetime.now(UTC)
        row: dict[str, Any] = {
            "id": new_id("opn"),
            "consultation_id": c.id,
            "version": latest.version + 1 if latest else 1,
            "supersedes": supersedes,
            "author_id": author.id,
            "key_id": key_id(author.public_key),
            # Whole seconds: the signed text and the stored column say the same.
            "signed_at": at.replace(microsecond=0),
            "acknowledged_by": None,
            "acknowledged_at": None,
        }
        message = canonical(_message(row, fields))
        row["signature"] = self._staff.sign(author, message)
        row["body_sealed"] = await self._sealer.seal_bytes(c.id, "body", row["id"], message)
        try:
            async with self._db.engine.begin() as conn:
                await conn.execute(insert(opinions).values(**row))
                await append(
                    conn, c.id, EventKind.opinion_filed, by=author.id, at=at, ref=row["id"]
                )
        except IntegrityError:
            raise Conflict(
                "another version was filed at the same moment", code="stale_version"
            ) from None
        return _opinion(row)

    async def versions(self, actor: Actor, consultation_id: str) -> list[Opinion]:
        await self._consultations.get(actor, consultation_id)
        return await self._rows(opinions.c.consultation_id == consultation_id)

    async def get(self, actor: Actor, opinion_id: str) -> Opinion:
        found = await self._rows(opinions.c.id == opinion_id)
        if not found:
            raise NotFound("no such opinion")
        try:
            await self._consultations.get(actor, found[0].consultation_id)
        except NotFound:
            raise NotFound("no such opinion") from None
        return found[0]

    async def read(self, opinion: Opinion) -> Reading:
        check, fields = await self._check(opinion)
        return Reading(opinion, check, fields if check is Check.ok else None)

    async def acknowledge(
        self, actor: Actor, opinion_id: str, *, now: datetime | None = None
    ) -> Opinion:
        """The requesting site's doctor has read this version (once; again is a no-op)."""
        opinion = await self.get(actor, opinion_id)
        c = await self._consultations.get(actor, opinion.consultation_id)
        if actor.role is not StaffRole.doctor or actor.site_id != c.site_id:
            raise Forbidden("the requesting site's doctor acknowledges an opinion")
        at = now or datetime.now(UTC)
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                update(opinions)
                .where(opinions.c.id == opinion.id, opinions.c.acknowledged_at.is_(None))
                .values(acknowledged_by=actor.id, acknowledged_at=at)
            )
            if result.rowcount == 1:
                await append(
                    conn, c.id, EventKind.opinion_acknowledged, by=actor.id, at=at, ref=opinion.id
                )
        return (await self._rows(opinions.c.id == opinion.id))[0]

    async def verify(self, consultation_id: str | None = None) -> list[Verification]:
        """Check every stored opinion (the operator's tool: no permission check)."""
        where = opinions.c.consultation_id == consultation_id if consultation_id else None
        rows = await self._rows(where)
        out = []
        for opinion in rows:
            check, _ = await self._check(opinion)
            out.append(Verification(opinion.id, opinion.consultation_id, opinion.version, check))
        return out

    async def _check(self, opinion: Opinion) -> tuple[Check, OpinionFields | None]:
        try:
            message = await self._sealer.open_bytes(
                opinion.consultation_id, "body", opinion.id, opinion.body_sealed
            )
        except Shredded:
            return Check.shredded, None
        except Unreadable:
            return Check.unreadable, None
        try:
            parsed = json.loads(message.decode("utf-8"))
            fields = OpinionFields(**{name: parsed["fields"][name] for name in FIELDS})
        except (ValueError, KeyError, TypeError):
            return Check.mismatch, None
        if canonical(_message(opinion, fields)) != message:
            return Check.mismatch, None
        try:
            author = await self._staff.get(opinion.author_id)
        except NotFound:
            return Check.unknown_key, None
        if key_id(author.public_key) != opinion.key_id:
            return Check.unknown_key, None
        if not verify(author.public_key, message, opinion.signature):
            return Check.bad_signature, None
        return Check.ok, fields

    async def _rows(self, where: object) -> list[Opinion]:
        query = select(opinions).order_by(opinions.c.consultation_id, opinions.c.version)
        if where is not None:
            query = query.where(where)  # type: ignore[arg-type]
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_opinion(r) for r in rows]


def _opinion(row: object) -> Opinion:
    r = dict(row)  # type: ignore[call-overload]
    return Opinion(
        id=r["id"],
        consultation_id=r["consultation_id"],
        version=int(r["version"]),
        supersedes=r["supersedes"],
        author_id=r["author_id"],
        key_id=r["key_id"],
        signed_at=r["signed_at"],
        body_sealed=bytes(r["body_sealed"]),
        signature=bytes(r["signature"]),
        acknowledged_by=r["acknowledged_by"],
        acknowledged_at=r["acknowledged_at"],
    )
