"""A consultation's timeline: what happened, when and by whom, as kinds and opaque ids.

Each repository appends its event in the transaction that makes the change, so the timeline
never shows something that did not happen (or misses something that did). Events carry no
clinical content: the page that shows them opens what it may.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from rooms.records.schema import consultation_events


class EventKind(StrEnum):
    started = "started"
    requested = "requested"
    proposed = "proposed"
    countered = "countered"
    accepted = "accepted"
    declined = "declined"
    rescheduled = "rescheduled"
    invited = "invited"
    staff_added = "staff_added"
    attachment_added = "attachment_added"
    opinion_filed = "opinion_filed"
    opinion_acknowledged = "opinion_acknowledged"


@dataclass(frozen=True)
class Event:
    at: datetime
    kind: EventKind
    by: str | None
    ref: str | None


async def append(
    conn: AsyncConnection,
    consultation_id: str,
    kind: EventKind,
    *,
    by: str | None,
    at: datetime,
    ref: str | None = None,
) -> None:
    await conn.execute(
        insert(consultation_events).values(
            consultation_id=consultation_id, at=at, kind=kind.value, by=by, ref=ref
        )
    )


async def events(conn: AsyncConnection, consultation_id: str) -> list[Event]:
    query = (
        select(consultation_events)
        .where(consultation_events.c.consultation_id == consultation_id)
        .order_by(consultation_events.c.at, consultation_events.c.id)
    )
    rows = (await conn.execute(query)).mappings().all()
    return [Event(r["at"], EventKind(r["kind"]), r["by"], r["ref"]) for r in rows]
