"""The records database contract, on SQLite and on a real PostgreSQL: migrations, and
revocations of join tokens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from rooms.records.database import Database, DatabaseError, NotMigrated, head_revision, safe_url
from rooms.records.revocations import Revocations, Scope

CID = "cons_ABC-123"


@pytest.fixture
async def database(records_url: str) -> AsyncIterator[Database]:
    db = Database(records_url)
    await db.upgrade()
    try:
        yield db
    finally:
        await db.close()


async def test_a_fresh_database_is_not_migrated_until_upgraded(records_url: str) -> None:
    db = Database(records_url)
    try:
        with pytest.raises(NotMigrated) as exc:
            await db.ensure_current()
        assert "teleconsult db upgrade" in str(exc.value) and exc.value.current is None
        assert await db.upgrade() == (None, head_revision())
        await db.ensure_current()
        assert await db.upgrade() == (head_revision(), head_revision())  # idempotent
    finally:
        await db.close()


async def test_only_a_new_embedded_file_is_created_by_serve(
    tmp_path: Path, records_url: str
) -> None:
    db = Database(records_url)
    try:
        if db.dialect == "sqlite":
            assert db.is_new_embedded
            await db.ensure_current(create_embedded=True)
            assert await db.revision() == head_revision()
            assert (tmp_path / "records.db").stat().st_mode & 0o777 == 0o600
        else:
            # PostgreSQL is shared: never migrated behind the operator's back.
            with pytest.raises(NotMigrated):
                await db.ensure_current(create_embedded=True)
    finally:
        await db.close()


async def test_an_unreachable_database_is_a_clear_error_without_the_password() -> None:
    db = Database("postgresql+asyncpg://tc:hunter2@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(DatabaseError) as exc:
            await db.revision()
        assert "hunter2" not in str(exc.value)
    finally:
        await db.close()
    assert "hunter2" not in safe_url("postgresql+asyncpg://tc:hunter2@db/x")
    with pytest.raises(DatabaseError):
        Database("mysql+aiomysql://db/x")


async def test_revocations_apply_to_what_they_name_only(database: Database) -> None:
    revocations = Revocations(database)
    assert await revocations.find(CID, "u-1", "t-1") is None
    await revocations.revoke(CID, Scope.token, "t-1", reason="revoked", by="u-doc")
    await revocations.revoke(CID, Scope.identity, "u-2", reason="removed", by="u-doc")
    found = await revocations.find(CID, "u-1", "t-1")
    assert found is not None and found.scope is Scope.token and found.revoked_by == "u-doc"
    assert await revocations.find(CID, "u-1", "t-9") is None  # another link of the same person
    assert (await revocations.find(CID, "u-2", None)).scope is Scope.identity  # type: ignore[union-attr]
    assert await revocations.find("other-consultation", "u-2", None) is None
    await revocations.revoke(CID, Scope.consultation, reason="ended")
    assert (await revocations.find(CID, "u-7", None)).scope is Scope.consultation  # type: ignore[union-attr]
    assert await revocations.find("other-consultation", "u-7", None) is None


async def test_revoking_twice_keeps_the_first_even_when_racing(database: Database) -> None:
    revocations = Revocations(database)
    results = await asyncio.gather(
        *(revocations.revoke(CID, Scope.identity, "u-1", reason=f"r{i}") for i in range(8))
    )
    assert len({r.id for r in results}) == 1
    assert len(await revocations.recent(timedelta(minutes=1))) == 1


async def test_recent_lists_what_was_revoked_within_the_window(database: Database) -> None:
    revocations = Revocations(database)
    now = datetime.now(UTC)
    old = await revocations.revoke(
        CID, Scope.identity, "u-0", reason="removed", now=now - timedelta(minutes=5)
    )
    a = await revocations.revoke(CID, Scope.identity, "u-1", reason="removed")
    b = await revocations.revoke(CID, Scope.token, "t-1", reason="revoked")
    assert [r.id for r in await revocations.recent(timedelta(seconds=60))] == [a.id, b.id]
    assert old.id in [r.id for r in await revocations.recent(timedelta(minutes=10))]


async def test_times_are_aware_utc_and_expired_ones_are_purged(database: Database) -> None:
    revocations = Revocations(database)
    now = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    shanghai = now.astimezone(ZoneInfo("Asia/Shanghai"))
    r = await revocations.revoke(
        CID, Scope.token, "t-1", reason="revoked", now=shanghai, expires_at=now + timedelta(hours=1)
    )
    assert r.revoked_at == now and r.revoked_at.tzinfo is not None
    await revocations.revoke(CID, Scope.token, "t-2", reason="revoked", now=now)
    assert await revocations.purge_expired(now + timedelta(hours=2)) == 1
    assert [x.subject for x in await revocations.recent(timedelta(days=1), now=now)] == ["t-2"]


async def test_bad_revocations_are_refused(database: Database) -> None:
    revocations = Revocations(database)
    with pytest.raises(ValueError):
        await revocations.revoke(CID, Scope.identity, "", reason="removed")
    with pytest.raises(ValueError):
        await revocations.revoke(CID, Scope.consultation, "u-1", reason="ended")
    with pytest.raises(ValueError):
        await revocations.revoke("bad id!", Scope.consultation, reason="ended")
    with pytest.raises(ValueError):
        await revocations.revoke(CID, Scope.token, "x" * 257, reason="revoked")
