"""Attachments of a consultation (images and PDF reports): the records of them.

The bytes live in an encrypted file under the data directory, named by the attachment's id
and sealed with the consultation's data key (signaling/console/attachments.py checks,
re-encodes and stores them). The row holds the type, size and SHA-256 of the stored
plaintext, and the file's original name, sealed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import insert, select

from rooms.records.access import Actor
from rooms.records.clinical import ClinicalCipher, ClinicalText, Sealer
from rooms.records.consultations import Consultation, Consultations, cares_for
from rooms.records.database import Database
from rooms.records.errors import Forbidden, InvalidInput, NotFound
from rooms.records.ids import new_id
from rooms.records.schema import attachments
from rooms.records.timeline import EventKind, append

MAX_FILE_NAME = 200


class MediaType(StrEnum):
    jpeg = "image/jpeg"
    png = "image/png"
    webp = "image/webp"
    pdf = "application/pdf"

    @property
    def is_image(self) -> bool:
        return self is not MediaType.pdf


@dataclass(frozen=True)
class Attachment:
    id: str
    consultation_id: str
    media_type: MediaType
    size: int
    sha256: str
    name_sealed: bytes = field(repr=False)
    uploaded_by: str
    created_at: datetime


def new_attachment_id() -> str:
    return new_id("att")


def file_name(value: str) -> str:
    """The name shown for a file: its last path part, printable, at most 200 characters."""
    name = value.replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = "".join(c for c in name if c.isprintable())[:MAX_FILE_NAME]
    return name or "attachment"


class Attachments:
    def __init__(
        self, database: Database, consultations: Consultations, cipher: ClinicalCipher
    ) -> None:
        self._db = database
        self._consultations = consultations
        self._sealer = Sealer(cipher, "attachments")

    async def require_uploader(self, actor: Actor, consultation_id: str) -> Consultation:
        """The consultation, if ``actor`` may add files to it: the requesting site's doctors
        and nurses, and staff taking part."""
        c = await self._consultations.get(actor, consultation_id)
        if actor.system or not (
            cares_for(actor, c) or await self._consultations.call_role(actor, c) is not None
        ):
            raise Forbidden("only those taking part add attachments")
        return c

    async def add(
        self,
        actor: Actor,
        consultation_id: str,
        *,
        attachment_id: str,
        media_type: MediaType,
        size: int,
        sha256: str,
        name: str,
        now: datetime | None = None,
    ) -> Attachment:
        c = await self.require_uploader(actor, consultation_id)
        if size <= 0 or len(sha256) != 64:
            raise InvalidInput("an attachment has bytes and their SHA-256")
        at = now or datetime.now(UTC)
        row = {
            "id": attachment_id,
            "consultation_id": c.id,
            "media_type": MediaType(media_type).value,
            "size": size,
            "sha256": sha256,
            "name_sealed": await self._sealer.seal(c.id, "name", attachment_id, file_name(name)),
            "uploaded_by": actor.id,
            "created_at": at,
        }
        async with self._db.engine.begin() as conn:
            await conn.execute(insert(attachments).values(**row))
            await append(
                conn, c.id, EventKind.attachment_added, by=actor.id, at=at, ref=attachment_id
            )
        return _attachment(row)

    async def list(self, actor: Actor, consultation_id: str) -> list[Attachment]:
        await self._consultations.get(actor, consultation_id)
        query = (
            select(attachments)
            .where(attachments.c.consultation_id == consultation_id)
            .order_by(attachments.c.created_at, attachments.c.id)
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_attachment(r) for r in rows]

    async def get(self, actor: Actor, attachment_id: str) -> Attachment:
        query = select(attachments).where(attachments.c.id == attachment_id)
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise NotFound("no such attachment")
        found = _attachment(row)
        try:
            await self._consultations.get(actor, found.consultation_id)
        except NotFound:
            raise NotFound("no such attachment") from None
        return found

    async def name(self, attachment: Attachment) -> ClinicalText:
        return await self._sealer.open(
            attachment.consultation_id, "name", attachment.id, attachment.name_sealed
        )


def _attachment(row: object) -> Attachment:
    r = dict(row)  # type: ignore[call-overload]
    return Attachment(
        id=r["id"],
        consultation_id=r["consultation_id"],
        media_type=MediaType(r["media_type"]),
        size=int(r["size"]),
        sha256=r["sha256"],
        name_sealed=bytes(r["name_sealed"]),
        uploaded_by=r["uploaded_by"],
        created_at=r["created_at"],
    )
