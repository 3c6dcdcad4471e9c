"""Call quality kept with a consultation: the media Workers' samples of each participant
(loss, round trip, frame rates, bitrates every few seconds; media/quality.py), written by
the signaling node in batches (signaling/quality.py) and shown to the host on the
consultation's page after the call.

Rows carry opaque per-session participant ids and call roles, never a name. They are kept
only for consultations that have a record (a call by a bare invitation link has no page to
show them on and no data key that a purge would destroy), and ``recordings purge`` deletes
them with the rest of the consultation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select

from rooms.records.consultations import Consultation
from rooms.records.database import Database
from rooms.records.schema import call_quality, consultations

# A consultation's page reads at most this many samples: a four-hour ward round of ten
# people at one sample every five seconds is 29,000.
MAX_SAMPLES = 50_000


@dataclass(frozen=True)
class QualityRow:
    participant_id: str
    role: str
    at: datetime
    interval_s: float
    loss_in: float | None = None
    loss_out: float | None = None
    rtt_ms: float | None = None
    fps_in: float | None = None
    fps_out: float | None = None
    kbps_in: float | None = None
    kbps_out: float | None = None


class CallQuality:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def add(self, batches: Mapping[str, Sequence[QualityRow]]) -> int:
        """Keep the rows of consultations that have a record, in one transaction; the
        number kept."""
        if not batches:
            return 0
        async with self._db.engine.begin() as conn:
            known = set(
                (
                    await conn.execute(
                        select(consultations.c.id).where(consultations.c.id.in_(list(batches)))
                    )
                ).scalars()
            )
            values = [
                {"consultation_id": cid, **asdict(row)}
                for cid, rows in batches.items()
                if cid in known
                for row in rows
            ]
            if values:
                await conn.execute(insert(call_quality), values)
        return len(values)

    async def samples(self, consultation: Consultation) -> list[QualityRow]:
        """In time order. Takes the record ``Consultations.get`` returned: whoever holds
        one may see the consultation, so the permission check has been made."""
        query = (
            select(call_quality)
            .where(call_quality.c.consultation_id == consultation.id)
            .order_by(call_quality.c.at, call_quality.c.id)
            .limit(MAX_SAMPLES)
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        names = QualityRow.__dataclass_fields__
        return [QualityRow(**{k: r[k] for k in names}) for r in rows]

    async def consultations(self) -> list[str]:
        """Every consultation that has samples."""
        query = select(call_quality.c.consultation_id).distinct()
        async with self._db.engine.connect() as conn:
            return sorted((await conn.execute(query)).scalars())

    async def purge(self, consultation_ids: Iterable[str]) -> int:
        """Delete every sample of these consultations (``recordings purge``)."""
        ids = list(consultation_ids)
        if not ids:
            return 0
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                delete(call_quality).where(call_quality.c.consultation_id.in_(ids))
            )
        return int(result.rowcount or 0)
