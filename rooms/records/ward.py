"""A ward round's agenda of beds, kept with the consultation's record.

Each bed has a label ("3-12"), an opaque patient reference (the hospital system's, never a
name by design, but treated as clinical all the same) and a short note; all three are sealed
together with the consultation's data key, so ``recordings purge`` shreds them with the
rest. The round's summary of a bed (who had the floor, who spoke, the notes) is sealed
beside it when the round moves on or ends. Access is checked by the caller (the front desk
API, or a Room whose participants hold tokens for this consultation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from rooms.records.clinical import ClinicalCipher, Sealer, Shredded, Unreadable
from rooms.records.database import Database
from rooms.records.errors import InvalidInput, NotFound
from rooms.records.ids import new_id
from rooms.records.schema import ward_beds

# A day's round of a ward; a longer list is a mistake or an attack.
MAX_BEDS = 60
MAX_LABEL = 40
MAX_PATIENT_REF = 64
MAX_NOTE = 500
# A summary: the notes of a bed and who spoke, bounded like the note itself.
MAX_SUMMARY_BYTES = 16 * 1024


def new_bed_id() -> str:
    return new_id("bed")


@dataclass(frozen=True)
class Bed:
    id: str
    position: int
    label: str = field(repr=False)
    patient_ref: str = field(repr=False)
    note: str = field(repr=False)
    summary: dict[str, Any] | None = field(default=None, repr=False)


def checked(label: str, patient_ref: str, note: str) -> tuple[str, str, str]:
    label, patient_ref, note = label.strip(), patient_ref.strip(), note.strip()
    if not label or len(label) > MAX_LABEL:
        raise InvalidInput(f"label: 1 to {MAX_LABEL} characters")
    if len(patient_ref) > MAX_PATIENT_REF:
        raise InvalidInput(f"patient_ref: at most {MAX_PATIENT_REF} characters")
    if len(note) > MAX_NOTE:
        raise InvalidInput(f"note: at most {MAX_NOTE} characters")
    return label, patient_ref, note


class WardBeds:
    def __init__(self, database: Database, cipher: ClinicalCipher) -> None:
        self._db = database
        self._sealer = Sealer(cipher, "ward_beds")

    async def beds(self, consultation_id: str) -> list[Bed]:
        """The agenda in order; a bed whose text cannot be read (shredded) is left out."""
        query = (
            select(ward_beds)
            .where(ward_beds.c.consultation_id == consultation_id)
            .order_by(ward_beds.c.position, ward_beds.c.id)
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        out: list[Bed] = []
        for r in rows:
            try:
                body = json.loads(
                    await self._sealer.open_bytes(
                        consultation_id, "body", r["id"], bytes(r["body_sealed"])
                    )
                )
                summary = None
                if r["summary_sealed"] is not None:
                    summary = json.loads(
                        await self._sealer.open_bytes(
                            consultation_id, "summary", r["id"], bytes(r["summary_sealed"])
                        )
                    )
            except (Shredded, Unreadable, ValueError):
                continue
            out.append(
                Bed(
                    id=r["id"],
                    position=r["position"],
                    label=str(body.get("label", "")),
                    patient_ref=str(body.get("patient_ref", "")),
                    note=str(body.get("note", "")),
                    summary=summary if isinstance(summary, dict) else None,
                )
            )
        return out

    async def add(self, consultation_id: str, label: str, patient_ref: str, note: str) -> Bed:
        """A bed at the end of the agenda."""
        label, patient_ref, note = checked(label, patient_ref, note)
        bed_id = new_bed_id()
        body = json.dumps(
            {"label": label, "patient_ref": patient_ref, "note": note}, ensure_ascii=False
        )
        sealed = await self._sealer.seal(consultation_id, "body", bed_id, body)
        where = ward_beds.c.consultation_id == consultation_id
        async with self._db.engine.begin() as conn:
            count, last = (
                await conn.execute(
                    select(func.count(), func.max(ward_beds.c.position)).where(where)
                )
            ).one()
            if count >= MAX_BEDS:
                raise InvalidInput(f"an agenda has at most {MAX_BEDS} beds", code="too_many")
            position = 0 if last is None else last + 1
            await conn.execute(
                insert(ward_beds).values(
                    id=bed_id,
                    consultation_id=consultation_id,
                    position=position,
                    body_sealed=sealed,
                    created_at=datetime.now(UTC),
                )
            )
        return Bed(bed_id, position, label, patient_ref, note)

    async def remove(self, consultation_id: str, bed_id: str) -> None:
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                delete(ward_beds).where(
                    ward_beds.c.consultation_id == consultation_id, ward_beds.c.id == bed_id
                )
            )
        if result.rowcount == 0:
            raise NotFound("no such bed")

    async def file_summary(
        self, consultation_id: str, bed_id: str, summary: dict[str, Any]
    ) -> None:
        data = json.dumps(summary, ensure_ascii=False)
        if len(data.encode()) > MAX_SUMMARY_BYTES:
            raise InvalidInput("the summary is too long")
        sealed = await self._sealer.seal(consultation_id, "summary", bed_id, data)
        async with self._db.engine.begin() as conn:
            await conn.execute(
                update(ward_beds)
                .where(ward_beds.c.consultation_id == consultation_id, ward_beds.c.id == bed_id)
                .values(summary_sealed=sealed)
            )
