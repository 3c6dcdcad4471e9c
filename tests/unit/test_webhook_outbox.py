"""The webhook outbox contract, on SQLite and on a real PostgreSQL: written once, sent in
order per consultation, one sender per row, given up visibly, retried on demand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from rooms.records.database import Database
from rooms.records.webhook_outbox import DeliveryState, OutboxEvent, WebhookOutbox

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
A, B = "ep_a", "ep_b"


@pytest.fixture
async def outbox(records_url: str) -> AsyncIterator[WebhookOutbox]:
    db = Database(records_url)
    await db.upgrade()
    try:
        yield WebhookOutbox(db)
    finally:
        await db.close()


def _event(n: int, consultation: str = "cons_one") -> OutboxEvent:
    return OutboxEvent(f"evt_{n}", consultation, "participant_joined", f'{{"n": {n}}}')


async def _add(outbox: WebhookOutbox, *events: OutboxEvent, endpoints=(A,), now=T0) -> None:
    await outbox.add(list(events), list(endpoints), now=now, give_up_after=DAY)


async def test_an_event_is_written_once_per_endpoint_however_often_it_is_added(
    outbox: WebhookOutbox,
) -> None:
    await _add(outbox, _event(1), endpoints=(A, B))
    await _add(outbox, _event(1), endpoints=(A, B))  # a write retried after a failure
    rows = await outbox.list()
    assert sorted((r.event_id, r.endpoint) for r in rows) == [("evt_1", A), ("evt_1", B)]
    assert all(r.state is DeliveryState.pending and r.attempts == 0 for r in rows)
    assert rows[0].body == '{"n": 1}' and rows[0].give_up_at == T0 + DAY


async def test_only_the_oldest_pending_row_of_a_consultation_is_due(
    outbox: WebhookOutbox,
) -> None:
    await _add(outbox, _event(1), _event(2), _event(3, "cons_two"), _event(4))
    due = await outbox.due(T0)
    assert [d.event_id for d in due] == ["evt_1", "evt_3"]
    # The head fails: the consultation's later events wait behind it, the other's do not.
    await outbox.failed(due[0].id, "HTTP 503", next_attempt_at=T0 + timedelta(seconds=10))
    assert [d.event_id for d in await outbox.due(T0 + timedelta(seconds=5))] == ["evt_3"]
    again = await outbox.due(T0 + timedelta(seconds=10))
    assert [d.event_id for d in again] == ["evt_1", "evt_3"]
    assert again[0].attempts == 1 and again[0].last_error == "HTTP 503"
    await outbox.delivered(again[0].id, now=T0 + timedelta(seconds=11))
    assert [d.event_id for d in await outbox.due(T0 + timedelta(seconds=11))] == [
        "evt_2",
        "evt_3",
    ]


async def test_a_claimed_row_goes_to_one_sender_and_is_not_due_meanwhile(
    outbox: WebhookOutbox,
) -> None:
    await _add(outbox, _event(1))
    (row,) = await outbox.due(T0)
    until = T0 + timedelta(seconds=40)
    claims = await asyncio.gather(*(outbox.claim(row.id, now=T0, until=until) for _ in range(8)))
    assert claims.count(True) == 1
    assert await outbox.due(T0 + timedelta(seconds=1)) == []
    # A sender that died holding it: the claim lapses and the row is due again.
    assert [d.id for d in await outbox.due(until + timedelta(seconds=1))] == [row.id]
    await outbox.delivered(row.id, now=T0)
    assert not await outbox.claim(row.id, now=until + timedelta(seconds=2), until=until)


async def test_dead_rows_are_visible_unblock_the_next_and_can_be_retried(
    outbox: WebhookOutbox,
) -> None:
    await _add(outbox, _event(1), _event(2))
    (head,) = await outbox.due(T0)
    await outbox.dead(head.id, "HTTP 410")
    assert [d.event_id for d in await outbox.due(T0)] == ["evt_2"]
    counts = await outbox.counts()
    assert counts == {DeliveryState.pending: 1, DeliveryState.delivered: 0, DeliveryState.dead: 1}
    (dead,) = await outbox.list(DeliveryState.dead)
    assert (dead.event_id, dead.last_error, dead.attempts) == ("evt_1", "HTTP 410", 1)

    later = T0 + 3 * DAY
    assert await outbox.retry(now=later, give_up_after=DAY, event_id="evt_1") == 1
    (row,) = [r for r in await outbox.list() if r.event_id == "evt_1"]
    assert row.state is DeliveryState.pending and row.give_up_at == later + DAY
    # Retried, it is the oldest pending row of its consultation again: first in line.
    assert [d.event_id for d in await outbox.due(later)] == ["evt_1"]


async def test_rows_of_an_endpoint_no_longer_configured_are_given_up(
    outbox: WebhookOutbox,
) -> None:
    await _add(outbox, _event(1), endpoints=(A, B))
    assert await outbox.abandon_endpoints_except([A]) == 1
    (dead,) = await outbox.list(DeliveryState.dead)
    assert (dead.endpoint, dead.last_error) == (B, "endpoint_removed")
    assert [d.endpoint for d in await outbox.due(T0)] == [A]


async def test_delivered_rows_are_purged_after_a_while(outbox: WebhookOutbox) -> None:
    await _add(outbox, _event(1), _event(2, "cons_two"))
    first, second = await outbox.due(T0)
    await outbox.delivered(first.id, now=T0)
    await outbox.delivered(second.id, now=T0 + DAY)
    assert await outbox.purge_delivered(T0 + timedelta(hours=1)) == 1
    assert [r.event_id for r in await outbox.list()] == ["evt_2"]
