"""Images shown in a call, kept with the consultation's record: which renditions exist (a
photo has one, a DICOM image one per window preset), their sizes and SHA-256, and the
technical tags sealed. The files themselves are encrypted under the consultation's data
key (signaling/sharing/store.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select

from rooms.records.clinical import ClinicalCipher, Sealer
from rooms.records.database import Database
from rooms.records.ids import new_id
from rooms.records.schema import shared_images


def new_image_id() -> str:
    return new_id("img")


@dataclass(frozen=True)
class Rendition:
    preset: str
    size: int
    sha256: str


@dataclass(frozen=True)
class SharedImageRow:
    id: str
    consultation_id: str
    kind: str  # photo | dicom
    media_type: str
    width: int
    height: int
    renditions: tuple[Rendition, ...]
    shared_by: str  # participant id
    role: str
    created_at: datetime


class SharedImages:
    def __init__(self, database: Database, cipher: ClinicalCipher) -> None:
        self._db = database
        self._sealer = Sealer(cipher, "shared_images")

    async def add(self, row: SharedImageRow, info: dict[str, object] | None) -> None:
        sealed = None
        if info is not None:
            sealed = await self._sealer.seal(
                row.consultation_id, "info", row.id, json.dumps(info, sort_keys=True)
            )
        async with self._db.engine.begin() as conn:
            await conn.execute(
                insert(shared_images).values(
                    id=row.id,
                    consultation_id=row.consultation_id,
                    kind=row.kind,
                    media_type=row.media_type,
                    width=row.width,
                    height=row.height,
                    renditions=json.dumps(
                        [
                            {"preset": r.preset, "size": r.size, "sha256": r.sha256}
                            for r in row.renditions
                        ]
                    ),
                    info_sealed=sealed,
                    shared_by=row.shared_by,
                    role=row.role,
                    created_at=row.created_at,
                )
            )

    async def get(
        self, consultation_id: str, image_id: str
    ) -> tuple[SharedImageRow, dict[str, object] | None] | None:
        """The image of this consultation by that id, and its tags; None if there is none
        (another consultation's image is none too)."""
        query = select(shared_images).where(
            shared_images.c.id == image_id, shared_images.c.consultation_id == consultation_id
        )
        async with self._db.engine.connect() as conn:
            r = (await conn.execute(query)).mappings().first()
        if r is None:
            return None
        info = None
        if r["info_sealed"] is not None:
            raw = await self._sealer.open_bytes(
                consultation_id, "info", r["id"], bytes(r["info_sealed"])
            )
            info = json.loads(raw)
        row = SharedImageRow(
            id=r["id"],
            consultation_id=r["consultation_id"],
            kind=r["kind"],
            media_type=r["media_type"],
            width=int(r["width"]),
            height=int(r["height"]),
            renditions=tuple(
                Rendition(str(x["preset"]), int(x["size"]), str(x["sha256"]))
                for x in json.loads(r["renditions"])
            ),
            shared_by=r["shared_by"],
            role=r["role"],
            created_at=r["created_at"],
        )
        return row, info
