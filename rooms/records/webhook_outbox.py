"""The webhook outbox: what must reach the hospital's systems, kept until it has.

An event is written once per endpoint (``add``; writing it again changes nothing, so a
retried write cannot duplicate it). A sender takes the oldest pending row of each
(endpoint, consultation) whose time has come (``due``), so a consultation's events arrive
in order; it claims the row first (``claim``: one ``UPDATE`` whose row count decides, so
two senders, on one node or several, never post the same row at once), then marks it
``delivered``, ``failed`` (with the time of the next attempt) or ``dead`` (given up:
visible, and ``retry`` puts it back). Rows hold ids only: the body is the signed JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping

from rooms.records.database import Database
from rooms.records.schema import webhook_outbox as t

# Errors are stored cut to the column's size.
_ERROR_CHARS = 200


class DeliveryState(StrEnum):
    pending = "pending"
    delivered = "delivered"
    dead = "dead"


@dataclass(frozen=True)
class OutboxEvent:
    """One published event, as the outbox stores it."""

    event_id: str
    consultation_id: str
    event_type: str
    body: str


@dataclass(frozen=True)
class Delivery:
    id: int
    event_id: str
    endpoint: str
    consultation_id: str
    event_type: str
    body: str
    state: DeliveryState
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    give_up_at: datetime
    delivered_at: datetime | None
    last_error: str | None


class WebhookOutbox:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def add(
        self,
        events: Sequence[OutboxEvent],
        endpoints: Iterable[str],
        *,
        now: datetime,
        give_up_after: timedelta,
    ) -> None:
        """Queue each event for each endpoint; rows already there are left as they are."""
        rows = [
            {
                "event_id": e.event_id,
                "endpoint": endpoint,
                "consultation_id": e.consultation_id,
                "event_type": e.event_type,
                "body": e.body,
                "state": DeliveryState.pending.value,
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
                "give_up_at": now + give_up_after,
            }
            for e in events
            for endpoint in endpoints
        ]
        if not rows:
            return
        dialect = postgresql if self._db.dialect == "postgresql" else sqlite
        query = dialect.insert(t).on_conflict_do_nothing(index_elements=["event_id", "endpoint"])
        async with self._db.engine.begin() as conn:
            await conn.execute(query, rows)

    async def due(self, now: datetime, *, limit: int = 100) -> list[Delivery]:
        """The rows to try now: per (endpoint, consultation) only the oldest pending one,
        and only if its time has come and no sender holds it. Oldest first."""
        heads = (
            select(func.min(t.c.id))
            .where(t.c.state == DeliveryState.pending.value)
            .group_by(t.c.endpoint, t.c.consultation_id)
        )
        query = (
            select(t)
            .where(
                t.c.id.in_(heads),
                t.c.next_attempt_at <= now,
                or_(t.c.claimed_until.is_(None), t.c.claimed_until < now),
            )
            .order_by(t.c.id)
            .limit(limit)
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_delivery(r) for r in rows]

    async def claim(self, delivery_id: int, *, now: datetime, until: datetime) -> bool:
        """Hold a pending row for one attempt; False if another sender holds it or it is no
        longer pending."""
        query = (
            update(t)
            .where(
                t.c.id == delivery_id,
                t.c.state == DeliveryState.pending.value,
                or_(t.c.claimed_until.is_(None), t.c.claimed_until < now),
            )
            .values(claimed_until=until)
        )
        async with self._db.engine.begin() as conn:
            return (await conn.execute(query)).rowcount == 1

    async def delivered(self, delivery_id: int, *, now: datetime) -> None:
        await self._finish(
            delivery_id,
            state=DeliveryState.delivered.value,
            delivered_at=now,
            attempts=t.c.attempts + 1,
            last_error=None,
        )

    async def failed(self, delivery_id: int, error: str, *, next_attempt_at: datetime) -> None:
        await self._finish(
            delivery_id,
            next_attempt_at=next_attempt_at,
            attempts=t.c.attempts + 1,
            last_error=error[:_ERROR_CHARS],
        )

    async def dead(self, delivery_id: int, error: str) -> None:
        await self._finish(
            delivery_id,
            state=DeliveryState.dead.value,
            attempts=t.c.attempts + 1,
            last_error=error[:_ERROR_CHARS],
        )

    async def _finish(self, delivery_id: int, **values: object) -> None:
        query = (
            update(t)
            .where(t.c.id == delivery_id, t.c.state == DeliveryState.pending.value)
            .values(claimed_until=None, **values)
        )
        async with self._db.engine.begin() as conn:
            await conn.execute(query)

    async def abandon_endpoints_except(self, endpoints: Iterable[str]) -> int:
        """Rows for endpoints no longer configured can never be sent: dead, and visible."""
        query = (
            update(t)
            .where(
                t.c.state == DeliveryState.pending.value,
                t.c.endpoint.not_in(list(endpoints)),
            )
            .values(state=DeliveryState.dead.value, last_error="endpoint_removed")
        )
        async with self._db.engine.begin() as conn:
            return (await conn.execute(query)).rowcount

    async def counts(self) -> dict[DeliveryState, int]:
        query = select(t.c.state, func.count()).group_by(t.c.state)
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        found = {DeliveryState(state): count for state, count in rows}
        return {state: found.get(state, 0) for state in DeliveryState}

    async def list(self, state: DeliveryState | None = None, *, limit: int = 100) -> list[Delivery]:
        """Newest first."""
        query = select(t).order_by(t.c.id.desc()).limit(limit)
        if state is not None:
            query = query.where(t.c.state == state.value)
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_delivery(r) for r in rows]

    async def retry(
        self, *, now: datetime, give_up_after: timedelta, event_id: str | None = None
    ) -> int:
        """Dead rows (all, or one event's) back to pending, due now."""
        conditions = [t.c.state == DeliveryState.dead.value]
        if event_id is not None:
            conditions.append(t.c.event_id == event_id)
        query = (
            update(t)
            .where(and_(*conditions))
            .values(
                state=DeliveryState.pending.value,
                next_attempt_at=now,
                give_up_at=now + give_up_after,
                claimed_until=None,
            )
        )
        async with self._db.engine.begin() as conn:
            return (await conn.execute(query)).rowcount

    async def purge_delivered(self, before: datetime) -> int:
        """Delivered rows are kept a while (to answer "was it sent?"), then dropped."""
        query = delete(t).where(
            t.c.state == DeliveryState.delivered.value, t.c.delivered_at < before
        )
        async with self._db.engine.begin() as conn:
            return (await conn.execute(query)).rowcount


def _delivery(row: RowMapping) -> Delivery:
    return Delivery(
        id=row["id"],
        event_id=row["event_id"],
        endpoint=row["endpoint"],
        consultation_id=row["consultation_id"],
        event_type=row["event_type"],
        body=row["body"],
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"],
        give_up_at=row["give_up_at"],
        delivered_at=row["delivered_at"],
        last_error=row["last_error"],
    )
