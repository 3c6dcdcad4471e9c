"""``teleconsult webhooks status|retry``: what was given up is listed, and goes back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rooms.records.database import Database, default_url
from rooms.records.webhook_outbox import DeliveryState, OutboxEvent, WebhookOutbox
from signaling.cli.main import main


@pytest.fixture
def outbox_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TELECONSULT_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("TELECONSULT_DATABASE_URL", raising=False)
    return default_url(tmp_path)


async def _dead_one(url: str) -> list[DeliveryState]:
    database = Database(url)
    try:
        await database.upgrade()
        outbox = WebhookOutbox(database)
        now = datetime.now(UTC)
        events = [OutboxEvent(f"evt_{n}", "cons_abcdef", "participant_left", "{}") for n in (1, 2)]
        await outbox.add(events, ["wh_a"], now=now, give_up_after=timedelta(days=1))
        first = (await outbox.due(now))[0]
        await outbox.dead(first.id, "HTTP 500")
        return [r.state for r in await outbox.list()]
    finally:
        await database.close()


async def _states(url: str) -> dict[str, DeliveryState]:
    database = Database(url)
    try:
        return {r.event_id: r.state for r in await WebhookOutbox(database).list()}
    finally:
        await database.close()


def test_status_lists_what_was_given_up_and_retry_puts_it_back(
    outbox_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_dead_one(outbox_url))
    assert main(["webhooks", "status"]) == 0
    out = capsys.readouterr().out
    assert "pending: 1, delivered: 0, dead: 1" in out
    assert "dead evt_1 participant_left consultation cons_abcdef to wh_a, 1 attempts" in out
    assert "HTTP 500" in out
    assert main(["webhooks", "retry", "--event", "evt_1"]) == 0
    assert "1 deliveries back" in capsys.readouterr().out
    assert asyncio.run(_states(outbox_url)) == {
        "evt_1": DeliveryState.pending,
        "evt_2": DeliveryState.pending,
    }
