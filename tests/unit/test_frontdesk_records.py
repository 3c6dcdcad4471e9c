"""The front desk's records contract, on SQLite and on a real PostgreSQL: sites,
departments, partnerships, staff, login back-off, API tokens, and who may touch what."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from rooms.records.access import Actor
from rooms.records.database import Database
from rooms.records.errors import Duplicate, Forbidden, InvalidInput, NotFound
from rooms.records.frontdesk import FrontDesk
from rooms.records.login import LoginOutcome
from rooms.records.login_throttle import (
    ADDRESS_POLICY,
    USERNAME_POLICY,
    LoginThrottle,
    Refusal,
    username_key,
)
from rooms.records.passwords import Passwords
from rooms.records.signing_keys import verify
from rooms.records.sites import SiteKind
from rooms.roles import StaffRole

ROOT = Actor.command_line("tester")
PASSWORD = "correct horse battery"
T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
async def database(records_url: str) -> AsyncIterator[Database]:
    db = Database(records_url)
    await db.upgrade()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def desk(database: Database, clock: FakeClock) -> FrontDesk:
    desk = FrontDesk.build(database, secrets.token_bytes(32), passwords=Passwords.for_tests())
    desk.authenticator._clock = clock  # the one seam for time: back-off runs on a fake clock
    return desk


async def _two_sites(desk: FrontDesk) -> tuple[str, str, str]:
    """A township health centre, an expert hospital with cardiology: (thc, hospital, dept)."""
    thc = await desk.sites.create(ROOT, SiteKind.township_health_centre, "Hetian THC")
    hosp = await desk.sites.create(ROOT, "expert_hospital", "Provincial People's Hospital")
    cardio = await desk.sites.add_department(ROOT, hosp.id, "Cardiology")
    return thc.id, hosp.id, cardio.id


async def _admin(desk: FrontDesk, site_id: str, username: str) -> Actor:
    member = await desk.staff.add(
        ROOT, username=username, display_name="Admin " + username, password=PASSWORD,
        role=StaffRole.admin, site_id=site_id,
    )  # fmt: skip
    return member.actor


# ------------------------------------------------------------------ sites and departments


async def test_sites_are_made_by_platform_admins_only(desk: FrontDesk) -> None:
    thc, hosp, _ = await _two_sites(desk)
    site_admin = await _admin(desk, thc, "thc-admin")
    with pytest.raises(Forbidden):
        await desk.sites.create(site_admin, SiteKind.village_clinic, "Another")
    with pytest.raises(InvalidInput):
        await desk.sites.create(ROOT, "spaceport", "Nowhere")
    with pytest.raises(InvalidInput):
        await desk.sites.create(ROOT, SiteKind.village_clinic, "  ")
    with pytest.raises(InvalidInput):
        await desk.sites.create(ROOT, SiteKind.village_clinic, "a\u202eb")
    assert {s.id for s in await desk.sites.list()} == {thc, hosp}
    assert (await desk.sites.get(hosp)).kind is SiteKind.expert_hospital
    with pytest.raises(NotFound):
        await desk.sites.get("site_0000000000000000")


async def test_a_site_admin_manages_departments_of_their_own_site_only(desk: FrontDesk) -> None:
    thc, hosp, cardio = await _two_sites(desk)
    hosp_admin = await _admin(desk, hosp, "hosp-admin")
    thc_admin = await _admin(desk, thc, "thc-admin")
    paeds = await desk.sites.add_department(hosp_admin, hosp, "Paediatrics")
    with pytest.raises(Forbidden):
        await desk.sites.add_department(thc_admin, hosp, "Sneaky")
    with pytest.raises(Duplicate):
        await desk.sites.add_department(hosp_admin, hosp, "Cardiology")
    assert [d.id for d in await desk.sites.departments(hosp)] == [cardio, paeds.id]
    assert (await desk.sites.department(cardio)).site_id == hosp


# ------------------------------------------------------------------ partnerships


async def test_partnerships_are_the_expert_hospitals_to_make_and_end(desk: FrontDesk) -> None:
    thc, hosp, cardio = await _two_sites(desk)
    hosp_admin = await _admin(desk, hosp, "hosp-admin")
    thc_admin = await _admin(desk, thc, "thc-admin")
    assert not await desk.sites.may_request(thc, cardio)
    with pytest.raises(Forbidden):  # the requester cannot grant itself access
        await desk.sites.partner(thc_admin, thc, cardio)
    p = await desk.sites.partner(hosp_admin, thc, cardio)
    assert p.active and p.expert_site_id == hosp and p.created_by == hosp_admin.id
    assert await desk.sites.may_request(thc, cardio)
    again = await desk.sites.partner(hosp_admin, thc, cardio)  # idempotent
    assert again.id == p.id
    assert [x.id for x in await desk.sites.partnerships(thc)] == [p.id]
    assert [x.id for x in await desk.sites.partnerships(hosp)] == [p.id]
    with pytest.raises(Forbidden):
        await desk.sites.end_partnership(thc_admin, p.id)
    ended = await desk.sites.end_partnership(hosp_admin, p.id)
    assert not ended.active and ended.ended_by == hosp_admin.id
    assert not await desk.sites.may_request(thc, cardio)
    assert await desk.sites.partnerships(thc) == []
    assert len(await desk.sites.partnerships(thc, include_ended=True)) == 1
    reopened = await desk.sites.partner(ROOT, thc, cardio)
    assert reopened.id == p.id and reopened.active


async def test_partnerships_need_an_expert_hospital_and_two_sites(desk: FrontDesk) -> None:
    thc, hosp, cardio = await _two_sites(desk)
    clinic_dept = await desk.sites.add_department(ROOT, thc, "General practice")
    with pytest.raises(InvalidInput):
        await desk.sites.partner(ROOT, hosp, clinic_dept.id)
    with pytest.raises(InvalidInput):
        await desk.sites.partner(ROOT, hosp, cardio)
    # An expert hospital may request from another one.
    other = await desk.sites.create(ROOT, SiteKind.expert_hospital, "Capital Hospital")
    neuro = await desk.sites.add_department(ROOT, other.id, "Neurology")
    assert (await desk.sites.partner(ROOT, hosp, neuro.id)).requester_site_id == hosp
    with pytest.raises(NotFound):
        await desk.sites.partner(ROOT, "site_0000000000000000", cardio)


async def test_a_partnership_is_visible_to_its_two_sites_only(desk: FrontDesk) -> None:
    thc, hosp, cardio = await _two_sites(desk)
    third = await desk.sites.create(ROOT, SiteKind.nursing_home, "Sunset Home")
    p = await desk.sites.partner(ROOT, thc, cardio)
    desk.sites.require_visible(await _admin(desk, thc, "a-thc"), p)
    desk.sites.require_visible(await _admin(desk, hosp, "a-hosp"), p)
    with pytest.raises(Forbidden):
        desk.sites.require_visible(await _admin(desk, third.id, "a-home"), p)
    assert await desk.sites.partnerships(third.id) == []


# ------------------------------------------------------------------ staff


async def test_staff_accounts_and_their_permissions_across_sites(desk: FrontDesk) -> None:
    thc, hosp, _ = await _two_sites(desk)
    thc_admin = await _admin(desk, thc, "thc-admin")
    doctor = await desk.staff.add(
        thc_admin, username="Dr.Wang", display_name="王医生", password=PASSWORD,
        role="doctor", site_id=thc,
    )  # fmt: skip
    assert doctor.username == "dr.wang" and doctor.role is StaffRole.doctor
    assert "王医生" not in repr(doctor) and PASSWORD not in repr(doctor)
    assert doctor.password_hash.startswith("$argon2id$") and PASSWORD not in doctor.password_hash
    with pytest.raises(Duplicate):
        await desk.staff.add(
            ROOT, username="DR.WANG", display_name="x", password=PASSWORD,
            role="nurse", site_id=hosp,
        )  # fmt: skip
    with pytest.raises(Forbidden):  # a site admin of A cannot add staff to B
        await desk.staff.add(
            thc_admin, username="mole", display_name="x", password=PASSWORD,
            role="admin", site_id=hosp,
        )  # fmt: skip
    with pytest.raises(Forbidden):  # nor make a platform admin
        await desk.staff.add(
            thc_admin, username="boss", display_name="x", password=PASSWORD,
            role="admin", site_id=thc, platform_admin=True,
        )  # fmt: skip
    with pytest.raises(Forbidden):
        await desk.staff.list(thc_admin, hosp)
    with pytest.raises(Forbidden):
        await desk.staff.add(
            doctor.actor, username="intern", display_name="x", password=PASSWORD,
            role="doctor", site_id=thc,
        )  # fmt: skip
    for bad in ("ab", "has space", "ünï", "x" * 65, "-dash"):
        with pytest.raises(InvalidInput):
            await desk.staff.add(
                ROOT, username=bad, display_name="x", password=PASSWORD, role="doctor",
                site_id=thc,
            )  # fmt: skip
    with pytest.raises(InvalidInput):
        await desk.staff.add(
            ROOT, username="shortpw", display_name="x", password="short", role="doctor",
            site_id=thc,
        )  # fmt: skip
    with pytest.raises(InvalidInput):
        await desk.staff.add(
            ROOT, username="nosite", display_name="x", password=PASSWORD, role="doctor",
            site_id=None,
        )  # fmt: skip
    assert [m.username for m in await desk.staff.list(thc_admin, thc)] == ["dr.wang", "thc-admin"]
    assert await desk.staff.count() == 2


async def test_another_sites_staff_cannot_be_reached_by_id(desk: FrontDesk) -> None:
    thc, hosp, _ = await _two_sites(desk)
    thc_admin = await _admin(desk, thc, "thc-admin")
    hosp_admin = await _admin(desk, hosp, "hosp-admin")
    platform = await desk.staff.add(
        ROOT, username="root", display_name="Root", password=PASSWORD, role="admin",
        site_id=None, platform_admin=True,
    )  # fmt: skip
    for action in (
        desk.staff.disable(thc_admin, hosp_admin.id),
        desk.staff.enable(thc_admin, hosp_admin.id),
        desk.staff.set_password(thc_admin, hosp_admin.id, "another password 1"),
        desk.staff.disable(hosp_admin, platform.id),
    ):
        with pytest.raises(NotFound):
            await action
    with pytest.raises(Forbidden):
        await desk.staff.disable(thc_admin, thc_admin.id)
    # A platform admin acts as admin of any site.
    assert (await desk.staff.disable(platform.actor, hosp_admin.id)).disabled


async def test_disabling_and_password_changes_end_every_session(desk: FrontDesk) -> None:
    thc, _, _ = await _two_sites(desk)
    admin = await _admin(desk, thc, "thc-admin")
    nurse = await desk.staff.add(
        admin, username="nurse1", display_name="N", password=PASSWORD, role="nurse", site_id=thc
    )
    assert nurse.session_generation == 0
    with pytest.raises(Forbidden):  # your own needs the current one
        await desk.staff.set_password(nurse.actor, nurse.id, "brand new password")
    with pytest.raises(Forbidden):
        await desk.staff.set_password(
            nurse.actor, nurse.id, "brand new password", current_password="wrong password!"
        )
    changed = await desk.staff.set_password(
        nurse.actor, nurse.id, "brand new password", current_password=PASSWORD
    )
    assert changed.session_generation == 1 and changed.password_hash != nurse.password_hash
    await desk.staff.end_sessions(nurse.id)
    disabled = await desk.staff.disable(admin, nurse.id)
    assert disabled.disabled and disabled.session_generation == 3
    assert not (await desk.staff.enable(admin, nurse.id)).disabled


async def test_every_account_has_a_signing_key_that_opens_only_for_it(desk: FrontDesk) -> None:
    thc, _, _ = await _two_sites(desk)
    a = await _admin(desk, thc, "signer-a")
    b = await _admin(desk, thc, "signer-b")
    ma, mb = await desk.staff.get(a.id), await desk.staff.get(b.id)
    signature = desk.staff.sign(ma, b"opinion: sinus rhythm")
    assert verify(ma.public_key, b"opinion: sinus rhythm", signature)
    assert not verify(mb.public_key, b"opinion: sinus rhythm", signature)
    assert ma.public_key != mb.public_key and len(ma.public_key) == 32


# ------------------------------------------------------------------ login and back-off


async def test_login_outcomes(desk: FrontDesk) -> None:
    thc, _, _ = await _two_sites(desk)
    admin = await _admin(desk, thc, "thc-admin")
    auth = desk.authenticator
    ok = await auth.login("THC-Admin ", PASSWORD, "10.0.0.1")
    assert ok.ok and ok.member is not None and ok.member.id == admin.id
    wrong = await auth.login("thc-admin", "not the password", "10.0.0.1")
    assert wrong.outcome is LoginOutcome.bad_credentials and wrong.member is not None
    unknown = await auth.login("nobody", PASSWORD, "10.0.0.1")
    assert unknown.outcome is LoginOutcome.bad_credentials and unknown.member is None
    garbage = await auth.login("\x00" * 5000, "x" * 100_000, "10.0.0.1")
    assert garbage.outcome is LoginOutcome.bad_credentials
    await desk.staff.disable(ROOT, admin.id)
    assert (await auth.login("thc-admin", PASSWORD, "10.0.0.2")).outcome is LoginOutcome.disabled


async def test_unknown_usernames_cost_a_password_check(
    desk: FrontDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str | None] = []
    real = desk.staff.passwords.verify

    async def spy(hashed: str | None, password: str) -> bool:
        checked.append(hashed)
        return await real(hashed, password)

    monkeypatch.setattr(desk.staff.passwords, "verify", spy)
    assert not (await desk.authenticator.login("nobody", PASSWORD, None)).ok
    assert not (await desk.authenticator.login("not a username!", PASSWORD, None)).ok
    assert checked == [None, None]  # None: the dummy hash, at the cost of a real one


async def test_back_off_then_lock_then_the_lock_ends_by_itself(
    desk: FrontDesk, clock: FakeClock
) -> None:
    thc, _, _ = await _two_sites(desk)
    await _admin(desk, thc, "thc-admin")
    auth = desk.authenticator
    policy = USERNAME_POLICY
    for _ in range(policy.free_failures):
        assert (await auth.login("thc-admin", "bad password!", "10.0.0.1")).outcome is (
            LoginOutcome.bad_credentials
        )
    # The 4th failure starts the back-off: 1 s, then 2 s, 4 s, ...
    assert (await auth.login("thc-admin", "bad password!", "10.0.0.1")).outcome is (
        LoginOutcome.bad_credentials
    )
    held = await auth.login("thc-admin", PASSWORD, "10.0.0.1")  # even the right one waits
    assert held.outcome is LoginOutcome.backoff and held.until == clock.now + timedelta(seconds=1)
    clock.advance(seconds=1)
    for n in range(policy.free_failures + 2, policy.lock_after + 1):
        assert (await auth.login("thc-admin", "bad password!", "10.0.0.1")).outcome is (
            LoginOutcome.bad_credentials
        )
        clock.advance(seconds=policy.wait(n).total_seconds())
    locked = await auth.login("thc-admin", PASSWORD, "10.0.0.1")
    assert locked.outcome is LoginOutcome.locked
    assert await desk.throttle.locked_until("thc-admin", clock.now) == locked.until
    clock.now = locked.until - timedelta(seconds=1)  # type: ignore[operator]
    assert (await auth.login("thc-admin", PASSWORD, "10.0.0.9")).outcome is LoginOutcome.locked
    clock.advance(seconds=1)
    assert (await auth.login("thc-admin", PASSWORD, "10.0.0.9")).ok
    # Success forgets the username's failures: the next typo is free again.
    assert (await auth.login("thc-admin", "bad password!", "10.0.0.9")).outcome is (
        LoginOutcome.bad_credentials
    )
    assert (await auth.login("thc-admin", PASSWORD, "10.0.0.9")).ok


async def test_an_admin_unlocks_an_account(desk: FrontDesk, clock: FakeClock) -> None:
    thc, _, _ = await _two_sites(desk)
    await _admin(desk, thc, "thc-admin")
    for n in range(1, USERNAME_POLICY.lock_after + 1):
        await desk.throttle.failed("thc-admin", None, clock.now)
        clock.advance(seconds=USERNAME_POLICY.wait(n).total_seconds())
    assert (await desk.authenticator.login("thc-admin", PASSWORD, None)).outcome is (
        LoginOutcome.locked
    )
    await desk.throttle.unlock("thc-admin")
    assert (await desk.authenticator.login("thc-admin", PASSWORD, None)).ok


async def test_an_address_backs_off_across_usernames(desk: FrontDesk, clock: FakeClock) -> None:
    throttle = desk.throttle
    for i in range(ADDRESS_POLICY.free_failures + 1):
        await throttle.failed(f"guess{i}", "203.0.113.7", clock.now)
    hold = await throttle.check("fresh-name", "203.0.113.7", clock.now)
    assert hold is not None and hold.reason is Refusal.backoff
    assert await throttle.check("fresh-name", "203.0.113.8", clock.now) is None
    clock.advance(seconds=1)
    assert await throttle.check("fresh-name", "203.0.113.7", clock.now) is None
    # Forgotten after a quiet hour.
    clock.advance(hours=1)
    await throttle.failed("guess-again", "203.0.113.7", clock.now)
    counter = await throttle.counter("a:203.0.113.7")
    assert counter is not None and counter.failures == 1


async def test_failures_counted_at_the_same_moment_all_count(database: Database) -> None:
    throttle = LoginThrottle(database)
    await asyncio.gather(*(throttle.failed("target", None, T0) for _ in range(8)))
    assert await throttle.locked_until("target", T0) is None
    counter = await throttle.counter(username_key("target"))
    assert counter is not None and counter.failures == 8
    await asyncio.gather(*(throttle.failed("target", None, T0) for _ in range(2)))
    assert await throttle.locked_until("target", T0) == T0 + USERNAME_POLICY.lock
    assert await throttle.purge(T0 + timedelta(days=2)) == 1


async def test_typed_usernames_are_not_stored(database: Database) -> None:
    throttle = LoginThrottle(database)
    await throttle.failed("MyPassword123", "192.0.2.1", T0)
    async with database.engine.connect() as conn:
        keys = [r[0] for r in (await conn.exec_driver_sql("SELECT key FROM login_failures"))]
    assert "a:192.0.2.1" in keys and not any("mypassword" in k.lower() for k in keys)


# ------------------------------------------------------------------ API tokens


async def test_api_tokens_are_scoped_to_one_site_and_revocable(desk: FrontDesk) -> None:
    thc, hosp, _ = await _two_sites(desk)
    thc_admin = await _admin(desk, thc, "thc-admin")
    issued = await desk.api_tokens.issue(thc_admin, thc, "HIS of Hetian")
    assert issued.secret.startswith("tcs_") and issued.secret not in repr(issued)
    token = await desk.api_tokens.check(issued.secret)
    assert token is not None and token.site_id == thc
    token.require_site(thc)
    with pytest.raises(Forbidden):
        token.require_site(hosp)
    with pytest.raises(Forbidden):
        await desk.api_tokens.issue(thc_admin, hosp, "not mine")
    hosp_admin = await _admin(desk, hosp, "hosp-admin")
    with pytest.raises(NotFound):
        await desk.api_tokens.revoke(hosp_admin, token.id)
    with pytest.raises(Forbidden):
        await desk.api_tokens.list(hosp_admin, thc)
    for forged in ("", "tcs_", issued.secret[:-1], issued.secret + "x", "Bearer x" * 100):
        assert await desk.api_tokens.check(forged) is None
    # Nothing stored would let a database reader use the token.
    async with desk.api_tokens._db.engine.connect() as conn:
        stored = [tuple(r) for r in await conn.exec_driver_sql("SELECT * FROM api_tokens")]
    assert not any(issued.secret in str(v) for row in stored for v in row)
    revoked = await desk.api_tokens.revoke(thc_admin, token.id)
    assert not revoked.active and revoked.revoked_by == thc_admin.id
    assert await desk.api_tokens.check(issued.secret) is None
    assert [t.id for t in await desk.api_tokens.list(thc_admin, thc)] == [token.id]
