"""When a consultation happens, and when its links work.

An appointment has a start and a duration. Its join links are valid from ``LEAD`` before the
start to ``GRACE`` after the planned end (a JWT's nbf and exp): a link opened earlier shows
when to come back, and one kept for next week does not work then. Rescheduling bumps the
appointment's ``sequence`` (the .ics SEQUENCE); the links made for the old time are revoked
and new ones issued (signaling/console/clinic.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from rooms.records.errors import InvalidInput
from rooms.records.ids import new_id
from rooms.records.schema import appointments

LEAD = timedelta(minutes=15)
GRACE = timedelta(minutes=30)
MIN_MINUTES = 5
# A whole day's ward round at most; with LEAD and GRACE far inside a token's 7 days.
MAX_MINUTES = 12 * 60
DEFAULT_MINUTES = 30
# Join tokens are minted when the appointment is booked, and a token may be used at most a
# year after its minting (signaling.tokens.MAX_HORIZON_S).
MAX_AHEAD = timedelta(days=360)
# A start this far in the past is a typo or a stale form, not "now".
PAST_SLACK = timedelta(minutes=5)


@dataclass(frozen=True)
class Window:
    """When a consultation's links work: [opens_at, closes_at)."""

    opens_at: datetime
    closes_at: datetime

    def contains(self, at: datetime) -> bool:
        return self.opens_at <= at < self.closes_at


def window(starts_at: datetime, minutes: int) -> Window:
    return Window(starts_at - LEAD, starts_at + timedelta(minutes=minutes) + GRACE)


def link_validity(slot: Window, now: datetime) -> Window:
    """The nbf/exp of a link made ``now``: the window, from now on if it has opened.

    InvalidInput once the window has closed: the consultation is over, nobody can join.
    """
    if now >= slot.closes_at:
        raise InvalidInput("the appointment is over: reschedule it to invite anyone", code="over")
    return Window(max(slot.opens_at, now), slot.closes_at)


def check_slot(starts_at: datetime, minutes: int, now: datetime) -> None:
    if starts_at.tzinfo is None:
        raise InvalidInput("the start needs a time zone")
    if not MIN_MINUTES <= minutes <= MAX_MINUTES:
        raise InvalidInput(
            f"the duration is {MIN_MINUTES}-{MAX_MINUTES} minutes", code="bad_duration"
        )
    if starts_at < now - PAST_SLACK:
        raise InvalidInput("the start is in the past", code="past")
    if starts_at > now + MAX_AHEAD:
        raise InvalidInput("the start is more than a year ahead", code="too_far")


@dataclass(frozen=True)
class Appointment:
    id: str
    consultation_id: str
    starts_at: datetime
    minutes: int
    sequence: int
    updated_by: str
    updated_at: datetime

    @property
    def ends_at(self) -> datetime:
        return self.starts_at + timedelta(minutes=self.minutes)

    @property
    def window(self) -> Window:
        return window(self.starts_at, self.minutes)


async def book(
    conn: AsyncConnection,
    consultation_id: str,
    starts_at: datetime,
    minutes: int,
    *,
    by: str,
    now: datetime,
) -> Appointment:
    """The consultation's appointment, inside the caller's transaction (checked first)."""
    check_slot(starts_at, minutes, now)
    row = {
        "id": new_id("apt"),
        "consultation_id": consultation_id,
        "starts_at": starts_at,
        "minutes": minutes,
        "sequence": 0,
        "updated_by": by,
        "updated_at": now,
    }
    await conn.execute(insert(appointments).values(**row))
    return _appointment(row)


async def move(
    conn: AsyncConnection,
    consultation_id: str,
    starts_at: datetime,
    minutes: int,
    *,
    by: str,
    now: datetime,
) -> Appointment:
    """Reschedule, inside the caller's transaction: the sequence goes up by one."""
    check_slot(starts_at, minutes, now)
    await conn.execute(
        update(appointments)
        .where(appointments.c.consultation_id == consultation_id)
        .values(
            starts_at=starts_at,
            minutes=minutes,
            sequence=appointments.c.sequence + 1,
            updated_by=by,
            updated_at=now,
        )
    )
    found = await appointment_of(conn, consultation_id)
    if found is None:
        raise InvalidInput("this consultation has no appointment to move")
    return found


async def appointment_of(conn: AsyncConnection, consultation_id: str) -> Appointment | None:
    query = select(appointments).where(appointments.c.consultation_id == consultation_id)
    row = (await conn.execute(query)).mappings().first()
    return _appointment(row) if row is not None else None


def _appointment(row: object) -> Appointment:
    r = dict(row)  # type: ignore[call-overload]
    return Appointment(
        id=r["id"],
        consultation_id=r["consultation_id"],
        starts_at=r["starts_at"],
        minutes=int(r["minutes"]),
        sequence=int(r["sequence"]),
        updated_by=r["updated_by"],
        updated_at=r["updated_at"],
    )
