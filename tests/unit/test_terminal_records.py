"""Nursing-home terminals' records, on SQLite and on a real PostgreSQL: pairing codes (wrong,
expired, limited attempts), the device credential (once, hashed, revocable), who may see,
configure and call a terminal."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from rooms.records.access import Actor
from rooms.records.database import Database
from rooms.records.errors import Forbidden, InvalidInput, NotFound
from rooms.records.frontdesk import FrontDesk
from rooms.records.passwords import Passwords
from rooms.records.schema import terminal_pairings, terminals
from rooms.records.sites import SiteKind
from rooms.records.terminals import MAX_FAILURES, TooManyAttempts
from rooms.roles import StaffRole

ROOT = Actor.command_line("tester")
T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


@pytest.fixture
async def database(records_url: str) -> AsyncIterator[Database]:
    db = Database(records_url)
    await db.upgrade()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def desk(database: Database) -> FrontDesk:
    return FrontDesk.build(database, secrets.token_bytes(32), passwords=Passwords.for_tests())


async def _member(desk: FrontDesk, site_id: str, username: str, role: StaffRole) -> Actor:
    member = await desk.staff.add(
        ROOT, username=username, display_name=username, password="correct horse battery",
        role=role, site_id=site_id,
    )  # fmt: skip
    return member.actor


async def test_a_code_entered_by_the_homes_admin_pairs_the_terminal_once(
    desk: FrontDesk, database: Database
) -> None:
    home = await desk.sites.create(ROOT, SiteKind.nursing_home, "Sunshine Home")
    admin = await _member(desk, home.id, "home-admin", StaffRole.admin)
    t = desk.terminals

    pairing = await t.start_pairing(now=T0)
    assert len(pairing.code) == 6 and pairing.code.isdigit()
    assert (await t.collect(pairing.ticket, now=T0)).state == "waiting"

    terminal = await t.pair(admin, home.id, pairing.code, "Room 203", auto_answer_s=10, now=T0)
    assert (terminal.label, terminal.auto_answer_s, terminal.paired) == ("Room 203", 10, False)
    got = await t.collect(pairing.ticket, now=T0 + timedelta(seconds=2))
    assert got.state == "paired" and got.terminal is not None and got.credential
    assert got.credential.startswith("tct_") and got.terminal.paired
    # Once: the ticket is spent, the code taken.
    with pytest.raises(NotFound):
        await t.collect(pairing.ticket, now=T0 + timedelta(seconds=3))
    with pytest.raises(InvalidInput) as refused:
        await t.pair(admin, home.id, pairing.code, "Room 204", now=T0)
    assert refused.value.code == "wrong_code"

    # Stored hashed: neither the code, the ticket nor the credential is in the database.
    async with database.engine.connect() as conn:
        stored = [
            *(await conn.execute(select(terminals))).all(),
            *(await conn.execute(select(terminal_pairings))).all(),
        ]
    text = repr(stored)
    for secret in (pairing.code, pairing.ticket, got.credential):
        assert secret not in text

    assert await t.authenticate(got.credential) == got.terminal
    assert await t.authenticate("tct_" + "x" * 43) is None
    assert await t.authenticate("not a credential") is None
    revoked = await t.revoke(admin, terminal.id)
    assert not revoked.active
    assert await t.authenticate(got.credential) is None


async def test_wrong_and_expired_codes_are_refused_and_attempts_limited(desk: FrontDesk) -> None:
    home = await desk.sites.create(ROOT, SiteKind.nursing_home, "Sunshine Home")
    admin = await _member(desk, home.id, "home-admin", StaffRole.admin)
    t = desk.terminals
    old = await t.start_pairing(now=T0)
    with pytest.raises(InvalidInput) as refused:
        await t.pair(admin, home.id, old.code, "Room 1", now=T0 + timedelta(minutes=11))
    assert refused.value.code == "expired_code"
    assert (await t.collect(old.ticket, now=T0 + timedelta(minutes=11))).state == "expired"

    fresh = await t.start_pairing(now=T0)
    wrong = f"{(int(fresh.code) + 1) % 1_000_000:06d}"
    for _ in range(MAX_FAILURES - 1):
        with pytest.raises(InvalidInput) as refused:
            await t.pair(admin, home.id, wrong, "Room 1", now=T0)
        assert refused.value.code == "wrong_code"
    # The limit counts per site; now even the right code is refused for a while.
    with pytest.raises(TooManyAttempts):
        await t.pair(admin, home.id, fresh.code, "Room 1", now=T0)
    later = T0 + timedelta(minutes=16)
    again = await t.start_pairing(now=later)
    assert (await t.pair(admin, home.id, again.code, "Room 1", now=later)).label == "Room 1"


async def test_who_may_pair_see_configure_and_call(desk: FrontDesk) -> None:
    home = await desk.sites.create(ROOT, SiteKind.nursing_home, "Sunshine Home")
    clinic = await desk.sites.create(ROOT, SiteKind.village_clinic, "Village clinic")
    admin = await _member(desk, home.id, "home-admin", StaffRole.admin)
    doctor = await _member(desk, home.id, "home-doctor", StaffRole.doctor)
    stranger = await _member(desk, clinic.id, "clinic-doctor", StaffRole.doctor)
    clinic_admin = await _member(desk, clinic.id, "clinic-admin", StaffRole.admin)
    t = desk.terminals
    pairing = await t.start_pairing()
    with pytest.raises(Forbidden):
        await t.pair(doctor, home.id, pairing.code, "Room 1")
    with pytest.raises(Forbidden):
        await t.pair(clinic_admin, home.id, pairing.code, "Room 1")
    with pytest.raises(InvalidInput) as refused:
        await t.pair(clinic_admin, clinic.id, pairing.code, "Room 1")
    assert refused.value.code == "not_nursing_home"
    terminal = await t.pair(admin, home.id, pairing.code, "Room 1")

    with pytest.raises(InvalidInput) as refused:
        await t.require_caller(doctor, terminal.id)
    assert refused.value.code == "not_paired"
    await t.collect(pairing.ticket)
    assert (await t.require_caller(doctor, terminal.id)).id == terminal.id
    for outsider in (stranger, admin):
        with pytest.raises(NotFound):
            await t.require_caller(outsider, terminal.id)
    assert [x.id for x in await t.list(doctor, home.id)] == [terminal.id]
    with pytest.raises(Forbidden):
        await t.list(stranger, home.id)
    with pytest.raises(NotFound):
        await t.set_auto_answer(doctor, terminal.id, 5)
    with pytest.raises(InvalidInput):
        await t.set_auto_answer(admin, terminal.id, 7)
    assert (await t.set_auto_answer(admin, terminal.id, "15")).auto_answer_s == 15
    with pytest.raises(NotFound):
        await t.revoke(clinic_admin, terminal.id)
    await t.revoke(admin, terminal.id)
    with pytest.raises(InvalidInput) as refused:
        await t.require_caller(doctor, terminal.id)
    assert refused.value.code == "revoked"
