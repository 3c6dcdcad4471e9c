"""Where a consultation's chat and shared images are kept: with its record, or in its Room.

A consultation that has a record (made at the front desk) keeps them there: chat rows and
image renditions sealed or encrypted with the consultation's data key, so they outlive the
call and a restart, and ``recordings purge`` shreds them with the rest. An ad-hoc one (a
bare invitation link, no record) keeps them in its Room's memory, bounded, for as long as
the call lasts: it has no record to keep them with, and a data key made for them outside
one would let a purged consultation be silently revived, which the clinical records never
allow (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from rooms.records.chat import ChatMessages, ChatRow
from rooms.records.clinical import ClinicalCipher, Shredded, Unreadable
from rooms.records.database import Database
from rooms.records.shared_images import Rendition, SharedImageRow, SharedImages, new_image_id
from rooms.records.ward import WardBeds
from signaling.console.attachments import AttachmentFiles, UploadRefused
from signaling.sharing.images import PreparedImage, prepare

log = logging.getLogger(__name__)

FOLDER = "shared"
# An ad-hoc call keeps at most this much in memory; the oldest image not on screen goes.
MEMORY_IMAGES = 12
MEMORY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class SharedImage:
    id: str
    kind: str  # photo | dicom
    media_type: str
    width: int
    height: int
    presets: tuple[str, ...]
    shared_by: str  # participant id
    info: dict[str, object] | None = None
    role: str = ""  # the sharer's call role


class ImageShelf(Protocol):
    """One consultation's shared images."""

    async def put(self, image: SharedImage, prepared: PreparedImage) -> None: ...

    async def get(self, image_id: str) -> SharedImage | None: ...

    async def read(self, image: SharedImage, preset: str) -> bytes: ...


class MemoryShelf:
    def __init__(self) -> None:
        self._images: OrderedDict[str, tuple[SharedImage, dict[str, bytes]]] = OrderedDict()
        # Never dropped to make room: the image everyone is looking at.
        self.showing: str | None = None

    async def put(self, image: SharedImage, prepared: PreparedImage) -> None:
        if prepared.size > MEMORY_BYTES:
            raise UploadRefused("the image is too large to show", code="too_large")
        self._images[image.id] = (image, dict(prepared.renditions))
        while len(self._images) > MEMORY_IMAGES or self._bytes() > MEMORY_BYTES:
            oldest = next(i for i in self._images if i != image.id and i != self.showing)
            del self._images[oldest]

    async def get(self, image_id: str) -> SharedImage | None:
        found = self._images.get(image_id)
        return found[0] if found else None

    async def read(self, image: SharedImage, preset: str) -> bytes:
        found = self._images.get(image.id)
        if found is None or preset not in found[1]:
            raise LookupError("no such image")
        return found[1][preset]

    def _bytes(self) -> int:
        return sum(len(b) for _, r in self._images.values() for b in r.values())


class RecordShelf:
    def __init__(self, consultation_id: str, records: SharedImages, files: AttachmentFiles) -> None:
        self._cid = consultation_id
        self._records = records
        self._files = files
        # Renditions' SHA-256 by image and preset, for reading them back.
        self._hashes: dict[str, dict[str, str]] = {}

    async def put(self, image: SharedImage, prepared: PreparedImage) -> None:
        renditions = []
        try:
            for preset, data in prepared.renditions.items():
                digest = await self._files.save(self._cid, _file(image.id, preset), data, FOLDER)
                renditions.append(Rendition(preset, len(data), digest))
            row = SharedImageRow(
                id=image.id,
                consultation_id=self._cid,
                kind=image.kind,
                media_type=image.media_type,
                width=image.width,
                height=image.height,
                renditions=tuple(renditions),
                shared_by=image.shared_by,
                role=image.role,
                created_at=datetime.now(UTC),
            )
            await self._records.add(row, image.info)
        except BaseException:
            for preset in prepared.renditions:
                await self._files.discard(self._cid, _file(image.id, preset), FOLDER)
            raise
        self._hashes[image.id] = {r.preset: r.sha256 for r in renditions}

    async def get(self, image_id: str) -> SharedImage | None:
        try:
            found = await self._records.get(self._cid, image_id)
        except (Shredded, Unreadable):
            return None
        if found is None:
            return None
        row, info = found
        self._hashes[row.id] = {r.preset: r.sha256 for r in row.renditions}
        return SharedImage(
            id=row.id,
            kind=row.kind,
            media_type=row.media_type,
            width=row.width,
            height=row.height,
            presets=tuple(r.preset for r in row.renditions),
            shared_by=row.shared_by,
            info=info,
            role=row.role,
        )

    async def read(self, image: SharedImage, preset: str) -> bytes:
        digest = self._hashes.get(image.id, {}).get(preset)
        if digest is None:
            raise LookupError("no such image")
        return await self._files.load(self._cid, _file(image.id, preset), digest, FOLDER)


def _file(image_id: str, preset: str) -> str:
    return f"{image_id}-{preset}"


@dataclass
class Sharing:
    """What Rooms need to keep chat, images and a ward round's agenda: the records, and
    the node's file workers (the front desk's, so uploads of both kinds share its two
    threads)."""

    chat: ChatMessages
    images: SharedImages
    files: AttachmentFiles = field(repr=False)
    ward: WardBeds | None = None

    @classmethod
    def build(cls, database: Database, cipher: ClinicalCipher, files: AttachmentFiles) -> Sharing:
        return cls(
            ChatMessages(database, cipher),
            SharedImages(database, cipher),
            files,
            WardBeds(database, cipher),
        )

    async def has_record(self, consultation_id: str) -> bool:
        try:
            return await self.chat.has_record(consultation_id)
        except Exception:
            # The records database unreachable: the call goes on with chat in memory.
            log.exception("looking up the record of %s failed", consultation_id)
            return False

    def shelf(self, consultation_id: str, *, record: bool) -> ImageShelf:
        if record:
            return RecordShelf(consultation_id, self.images, self.files)
        return MemoryShelf()

    async def prepare(self, data: bytes) -> PreparedImage:
        """Sniff, clean or render ``data`` off the event loop; UploadRefused with a reason."""
        return await self.files.run(prepare, data)

    async def keep_chat(self, consultation_id: str, row: ChatRow) -> None:
        await self.chat.add(consultation_id, row)

    async def chat_history(self, consultation_id: str, limit: int) -> list[ChatRow]:
        return await self.chat.recent(consultation_id, limit)


def new_shared_image(prepared: PreparedImage, shared_by: str, role: str) -> SharedImage:
    return SharedImage(
        id=new_image_id(),
        kind=prepared.kind,
        media_type=prepared.media_type,
        width=prepared.width,
        height=prepared.height,
        presets=tuple(prepared.renditions),
        shared_by=shared_by,
        info=prepared.info.as_dict() if prepared.info is not None else None,
        role=role,
    )


class Keeping:
    """For one Room: whether its consultation has a record (looked up once, on first use)
    and so where its chat and images go."""

    def __init__(self, sharing: Sharing | None, consultation_id: str) -> None:
        self.sharing = sharing
        self.consultation_id = consultation_id
        self._record: asyncio.Future[bool] | None = None
        self._shelf: ImageShelf | None = None

    async def record(self) -> bool:
        if self.sharing is None:
            return False
        if self._record is None:
            self._record = asyncio.ensure_future(self.sharing.has_record(self.consultation_id))
        return await asyncio.shield(self._record)

    async def shelf(self) -> ImageShelf:
        record = await self.record()
        if self._shelf is None:
            if self.sharing is None:
                self._shelf = MemoryShelf()
            else:
                self._shelf = self.sharing.shelf(self.consultation_id, record=record)
        return self._shelf
