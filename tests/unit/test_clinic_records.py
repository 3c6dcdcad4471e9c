"""The clinical records contract, on SQLite and on a real PostgreSQL: requests through
partnerships only, who sees what across sites, the department's queue, exactly one winner
when experts accept at once, scheduling, links, signed opinions, and crypto-shredding."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, update

from recordings.crypto import Keystore
from rooms.records.access import Actor
from rooms.records.clinic import Clinic
from rooms.records.clinical import TextState
from rooms.records.database import Database
from rooms.records.errors import Conflict, Forbidden, InvalidInput, NotFound
from rooms.records.frontdesk import FrontDesk
from rooms.records.invitations import NewLink
from rooms.records.opinions import Check, OpinionFields
from rooms.records.passwords import Passwords
from rooms.records.schema import consultation_requests, metadata, opinions
from rooms.records.sites import SiteKind
from rooms.records.staff import StaffMember
from rooms.roles import Role, StaffRole
from signaling.console.cipher import KeystoreCipher

ROOT = Actor.command_line("tester")
PASSWORD = "correct horse battery"
NOW = datetime.now(UTC).replace(microsecond=0)
LATER = NOW + timedelta(days=2)


@pytest.fixture
async def database(records_url: str) -> AsyncIterator[Database]:
    db = Database(records_url)
    await db.upgrade()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def keystore(tmp_path: Path) -> Keystore:
    return Keystore(tmp_path / "keys", secrets.token_bytes(32))


@dataclass
class World:
    desk: FrontDesk
    clinic: Clinic
    keystore: Keystore
    thc: str
    hosp: str
    village: str
    cardio: str
    paeds: str
    doctor: StaffMember
    nurse: StaffMember
    thc_admin: StaffMember
    expert: StaffMember
    expert2: StaffMember
    hosp_admin: StaffMember
    village_doctor: StaffMember


@pytest.fixture
async def world(database: Database, keystore: Keystore) -> World:
    desk = FrontDesk.build(database, secrets.token_bytes(32), passwords=Passwords.for_tests())
    clinic = Clinic.build(database, desk, KeystoreCipher(keystore))
    thc = await desk.sites.create(ROOT, SiteKind.township_health_centre, "Hetian THC")
    hosp = await desk.sites.create(ROOT, SiteKind.expert_hospital, "Provincial Hospital")
    village = await desk.sites.create(ROOT, SiteKind.village_clinic, "Xiaocun clinic")
    cardio = await desk.sites.add_department(ROOT, hosp.id, "Cardiology")
    paeds = await desk.sites.add_department(ROOT, hosp.id, "Paediatrics")
    await desk.sites.partner(ROOT, thc.id, cardio.id)

    async def member(username: str, role: StaffRole, site: str) -> StaffMember:
        return await desk.staff.add(
            ROOT,
            username=username,
            display_name=f"Name of {username}",
            password=PASSWORD,
            role=role,
            site_id=site,
        )

    return World(
        desk,
        clinic,
        keystore,
        thc.id,
        hosp.id,
        village.id,
        cardio.id,
        paeds.id,
        doctor=await member("dr-wang", StaffRole.doctor, thc.id),
        nurse=await member("nurse-li", StaffRole.nurse, thc.id),
        thc_admin=await member("thc-admin", StaffRole.admin, thc.id),
        expert=await member("dr-zhang", StaffRole.expert, hosp.id),
        expert2=await member("dr-chen", StaffRole.expert, hosp.id),
        hosp_admin=await member("hosp-admin", StaffRole.admin, hosp.id),
        village_doctor=await member("dr-village", StaffRole.doctor, village.id),
    )


async def _request(w: World, urgency: str = "routine", *, at: datetime = NOW) -> str:
    request, _ = await w.clinic.requests.create(
        w.doctor.actor,
        w.cardio,
        urgency=urgency,
        reason="Chest pain, ECG attached",
        patient="Patient Zhao",
        preferred_times=[LATER],
        now=at,
    )
    return request.id


# ------------------------------------------------------------------ the schema


async def test_the_migrations_make_exactly_the_schema(database: Database) -> None:
    async with database.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), metadata)
        )
    assert diff == []


# ------------------------------------------------------------------ asking


async def test_a_request_needs_a_partnership_and_says_so(world: World) -> None:
    w = world
    with pytest.raises(Forbidden) as refused:
        await w.clinic.requests.create(
            w.village_doctor.actor, w.cardio, urgency="urgent", reason="x", patient="P"
        )
    assert refused.value.code == "no_partnership"
    assert "partnership" in str(refused.value)
    with pytest.raises(Forbidden) as refused:
        await w.clinic.requests.create(
            w.doctor.actor, w.paeds, urgency="urgent", reason="x", patient="P"
        )
    assert refused.value.code == "no_partnership"
    for who in (w.thc_admin, w.expert):
        with pytest.raises(Forbidden):
            await w.clinic.requests.create(
                who.actor, w.cardio, urgency="urgent", reason="x", patient="P"
            )
    with pytest.raises(InvalidInput):
        await w.clinic.requests.create(
            w.doctor.actor, w.cardio, urgency="whenever", reason="x", patient="P"
        )
    with pytest.raises(InvalidInput):
        await w.clinic.requests.create(
            w.doctor.actor, w.cardio, urgency="urgent", reason="  ", patient="P"
        )
    # A nurse may ask; an ended partnership no longer lets anyone.
    await w.clinic.requests.create(
        w.nurse.actor, w.cardio, urgency="routine", reason="Rash", patient="P"
    )
    partnership = (await w.desk.sites.partnerships(w.thc))[0]
    await w.desk.sites.end_partnership(ROOT, partnership.id)
    with pytest.raises(Forbidden):
        await w.clinic.requests.create(
            w.doctor.actor, w.cardio, urgency="routine", reason="Rash", patient="P"
        )


async def test_a_request_is_seen_by_its_two_sites_only(world: World) -> None:
    w = world
    request_id = await _request(w)
    request = await w.clinic.requests.get(w.doctor.actor, request_id)
    cid = request.consultation_id
    for allowed in (w.doctor, w.nurse, w.expert, w.expert2):
        assert (await w.clinic.consultations.get(allowed.actor, cid)).id == cid
    # Another site's doctor, and administrators (who see no patients), get NotFound.
    for refused in (w.village_doctor, w.thc_admin, w.hosp_admin):
        with pytest.raises(NotFound):
            await w.clinic.consultations.get(refused.actor, cid)
        with pytest.raises(NotFound):
            await w.clinic.requests.get(refused.actor, request_id)
        summaries = await w.clinic.consultations.summaries(refused.actor, since=NOW)
        assert summaries == []
    with pytest.raises(NotFound):
        await w.clinic.consultations.get(ROOT, cid)
    listed = await w.clinic.consultations.summaries(w.expert.actor, since=NOW)
    assert [s.consultation.id for s in listed] == [cid]
    assert listed[0].request_status == "pending" and listed[0].urgency == "routine"
    # A hospital system with its site's token sees it; another site's does not.
    assert await w.clinic.consultations.get(Actor.site_system("tok_1", w.thc), cid)
    with pytest.raises(NotFound):
        await w.clinic.consultations.get(Actor.site_system("tok_2", w.village), cid)
    reason = await w.clinic.requests.reason(request)
    assert reason.text == "Chest pain, ECG attached"
    c = await w.clinic.consultations.get(w.expert.actor, cid)
    assert (await w.clinic.consultations.patient_name(c)).text == "Patient Zhao"


async def test_the_queue_is_ordered_by_urgency_then_age(world: World) -> None:
    w = world
    routine_old = await _request(w, "routine", at=NOW - timedelta(minutes=40))
    emergency = await _request(w, "emergency", at=NOW - timedelta(minutes=10))
    urgent = await _request(w, "urgent", at=NOW - timedelta(minutes=30))
    routine_new = await _request(w, "routine", at=NOW - timedelta(minutes=20))
    queue = await w.clinic.requests.queue(w.expert.actor, w.cardio)
    assert [r.id for r in queue] == [emergency, urgent, routine_old, routine_new]
    with pytest.raises(Forbidden):
        await w.clinic.requests.queue(w.doctor.actor, w.cardio)
    with pytest.raises(Forbidden):
        await w.clinic.requests.queue(w.village_doctor.actor, w.cardio)
    # Decided requests leave the queue; one waiting for the doctor's answer goes last.
    await w.clinic.requests.accept(w.expert.actor, emergency, LATER, 30)
    await w.clinic.requests.propose(w.expert.actor, urgent, LATER + timedelta(hours=1), 45)
    queue = await w.clinic.requests.queue(w.expert.actor, w.cardio)
    assert [r.id for r in queue] == [routine_old, routine_new, urgent]
    assert await w.clinic.requests.queue(w.expert.actor, w.paeds) == []


async def test_experts_accepting_at_once_exactly_one_wins(world: World) -> None:
    w = world
    for round_ in range(4):
        request_id = await _request(w)
        experts = [w.expert, w.expert2]
        results = await asyncio.gather(
            *(
                w.clinic.requests.accept(e.actor, request_id, LATER + timedelta(hours=round_))
                for e in experts
            ),
            return_exceptions=True,
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, BaseException)]
        assert len(winners) == 1, results
        assert len(losers) == 1 and isinstance(losers[0], Conflict), losers
        assert losers[0].code == "taken"
        request = await w.clinic.requests.get(w.doctor.actor, request_id)
        assert request.status == "accepted"
        members = await w.clinic.consultations.members(request.consultation_id)
        experts_in = [m.staff_id for m in members if m.role is Role.expert]
        assert experts_in == [request.decided_by]
        appointment = await w.clinic.consultations.appointment(request.consultation_id)
        assert appointment is not None and appointment.sequence == 0
    # Deciding again is refused too.
    with pytest.raises(Conflict):
        await w.clinic.requests.decline(w.expert.actor, request_id, "Too late")


async def test_propose_then_the_doctor_accepts_or_counters(world: World) -> None:
    w = world
    first, second = await _request(w), await _request(w)
    proposed_at = LATER + timedelta(hours=3)
    await w.clinic.requests.propose(w.expert.actor, first, proposed_at, 45)
    with pytest.raises(Forbidden):
        await w.clinic.requests.accept_proposal(w.expert.actor, first)
    appointment = await w.clinic.requests.accept_proposal(w.doctor.actor, first)
    assert appointment.starts_at == proposed_at and appointment.minutes == 45
    request = await w.clinic.requests.get(w.doctor.actor, first)
    assert request.status == "accepted" and request.decided_by == w.expert.id
    assert await w.clinic.consultations.experts(request.consultation_id) == {w.expert.id}

    await w.clinic.requests.propose(w.expert2.actor, second, proposed_at, 30)
    counter = LATER + timedelta(days=1)
    countered = await w.clinic.requests.counter(w.nurse.actor, second, [counter])
    assert countered.status == "pending" and countered.preferred_times == (counter,)
    assert countered.proposed_start is None
    with pytest.raises(Conflict):
        await w.clinic.requests.accept_proposal(w.doctor.actor, second)
    kinds = [
        e.kind
        for e in await w.clinic.consultations.timeline(w.doctor.actor, countered.consultation_id)
    ]
    assert kinds == ["requested", "proposed", "countered"]


async def test_a_decline_keeps_its_reason_sealed(world: World, database: Database) -> None:
    w = world
    request_id = await _request(w)
    with pytest.raises(Forbidden):
        await w.clinic.requests.decline(w.doctor.actor, request_id, "no")
    declined = await w.clinic.requests.decline(w.expert.actor, request_id, "Please see GP first")
    assert declined.status == "declined"
    assert (await w.clinic.requests.decline_reason(declined)).text == "Please see GP first"
    async with database.engine.connect() as conn:
        raw = (await conn.execute(select(consultation_requests))).mappings().first()
    assert raw is not None
    for column in ("reason_sealed", "decline_reason_sealed"):
        assert b"Please" not in raw[column] and b"Chest" not in raw[column]


async def test_a_sealed_field_does_not_open_in_another_row(
    world: World, database: Database
) -> None:
    w = world
    first, second = await _request(w), await _request(w)
    one = await w.clinic.requests.get(w.doctor.actor, first)
    async with database.engine.begin() as conn:
        await conn.execute(
            update(consultation_requests)
            .where(consultation_requests.c.id == second)
            .values(reason_sealed=one.reason_sealed)
        )
    moved = await w.clinic.requests.get(w.doctor.actor, second)
    assert (await w.clinic.requests.reason(moved)).state is TextState.unreadable
    assert (await w.clinic.requests.reason(one)).ok


# ------------------------------------------------------------------ taking part, scheduling


async def test_start_now_and_staff_by_name_across_partner_sites(world: World) -> None:
    w = world
    with pytest.raises(Forbidden):
        await w.clinic.consultations.start_now(w.nurse.actor, "joint")
    with pytest.raises(Forbidden):
        await w.clinic.consultations.start_now(w.thc_admin.actor, "joint")
    c, appointment = await w.clinic.consultations.start_now(
        w.doctor.actor, "ward_round", minutes=60, patient="Bed 12", now=NOW
    )
    assert appointment.starts_at == NOW and appointment.window.contains(NOW)
    # The partner hospital's experts do not see a consultation started at home...
    with pytest.raises(NotFound):
        await w.clinic.consultations.get(w.expert.actor, c.id)
    invitable = {m.id for m in await w.clinic.consultations.invitable(w.doctor.actor, c)}
    assert {w.nurse.id, w.expert.id, w.expert2.id} <= invitable
    assert not invitable & {w.doctor.id, w.thc_admin.id, w.hosp_admin.id, w.village_doctor.id}
    # ... until the doctor adds one by name; a non-partner's staff cannot be added.
    await w.clinic.consultations.add_staff(w.doctor.actor, c.id, w.expert.id)
    assert (await w.clinic.consultations.get(w.expert.actor, c.id)).id == c.id
    assert await w.clinic.consultations.call_role(w.expert.actor, c) is Role.expert
    assert await w.clinic.consultations.call_role(w.nurse.actor, c) is Role.nurse
    with pytest.raises(NotFound):
        await w.clinic.consultations.get(w.expert2.actor, c.id)
    with pytest.raises(NotFound):
        await w.clinic.consultations.add_staff(w.doctor.actor, c.id, w.village_doctor.id)
    with pytest.raises(Forbidden):
        await w.clinic.consultations.add_staff(w.expert.actor, c.id, w.expert2.id)
    listed = await w.clinic.consultations.summaries(w.expert.actor, since=NOW - timedelta(hours=1))
    assert [s.consultation.id for s in listed] == [c.id]


async def test_rescheduling_bumps_the_sequence_and_leaves_old_links_stale(
    world: World,
) -> None:
    w = world
    request_id = await _request(w)
    appointment = await w.clinic.requests.accept(w.expert.actor, request_id, LATER, 30)
    c = await w.clinic.consultations.get(
        w.doctor.actor, (await w.clinic.requests.get(w.doctor.actor, request_id)).consultation_id
    )
    link = NewLink(
        jti="t-old",
        role=Role.patient,
        identity="u-patient",
        name="Patient Zhao",
        token="header.payload.signature",
        valid_from=appointment.window.opens_at,
        valid_until=appointment.window.closes_at,
        sequence=appointment.sequence,
    )
    with pytest.raises(Forbidden):
        await w.clinic.invitations.add(w.expert.actor, c, link)
    with pytest.raises(InvalidInput):
        await w.clinic.invitations.add(
            w.doctor.actor, c, NewLink(**{**link.__dict__, "role": Role.doctor})
        )
    invitation = await w.clinic.invitations.add(w.doctor.actor, c, link)
    assert (await w.clinic.invitations.token(invitation)).text == "header.payload.signature"
    assert (await w.clinic.invitations.name(invitation)).text == "Patient Zhao"
    with pytest.raises(NotFound):
        await w.clinic.invitations.get(w.village_doctor.actor, invitation.id)
    with pytest.raises(Forbidden):
        await w.clinic.consultations.reschedule(w.expert2.actor, c.id, LATER, 30)
    moved = await w.clinic.consultations.reschedule(
        w.expert.actor, c.id, LATER + timedelta(days=1), 40
    )
    assert moved.sequence == 1 and moved.minutes == 40
    stale = await w.clinic.invitations.stale(c.id, moved.sequence)
    assert [i.id for i in stale] == [invitation.id]
    await w.clinic.invitations.mark_revoked(invitation.id, w.expert.id)
    assert await w.clinic.invitations.stale(c.id, moved.sequence) == []
    with pytest.raises(InvalidInput):
        await w.clinic.consultations.reschedule(w.doctor.actor, c.id, NOW - timedelta(days=1), 30)


# ------------------------------------------------------------------ opinions


async def _accepted(w: World) -> str:
    request_id = await _request(w)
    await w.clinic.requests.accept(w.expert.actor, request_id, LATER, 30)
    return (await w.clinic.requests.get(w.doctor.actor, request_id)).consultation_id


FIELDS = OpinionFields.checked(
    findings="Sinus rhythm, ST elevation in V2-V4.",
    impression="Anterior STEMI. 前壁心肌梗死。",
    recommendations="Transfer for PCI now.",
    follow_up="Cardiology clinic in 6 weeks.",
)


async def test_only_the_consultations_expert_files_and_an_amendment_is_a_new_version(
    world: World,
) -> None:
    w = world
    cid = await _accepted(w)
    for refused in (w.expert2, w.doctor):
        with pytest.raises(Forbidden):
            await w.clinic.opinions.file(refused, cid, FIELDS)
    with pytest.raises(NotFound):
        await w.clinic.opinions.file(w.village_doctor, cid, FIELDS)
    first = await w.clinic.opinions.file(w.expert, cid, FIELDS)
    assert first.version == 1 and first.supersedes is None
    with pytest.raises(Conflict):
        await w.clinic.opinions.file(w.expert, cid, FIELDS)  # an amendment names its base
    amended_fields = OpinionFields.checked(
        findings=FIELDS.findings,
        impression=FIELDS.impression,
        recommendations="Transfer for PCI now; aspirin 300 mg.",
        follow_up="",
    )
    second = await w.clinic.opinions.file(w.expert, cid, amended_fields, supersedes=first.id)
    assert second.version == 2 and second.supersedes == first.id
    with pytest.raises(Conflict):
        await w.clinic.opinions.file(w.expert, cid, FIELDS, supersedes=first.id)
    versions = await w.clinic.opinions.versions(w.doctor.actor, cid)
    assert [v.id for v in versions] == [first.id, second.id]
    old = await w.clinic.opinions.read(versions[0])
    assert old.check is Check.ok and old.fields == FIELDS
    new = await w.clinic.opinions.read(versions[1])
    assert new.fields == amended_fields
    # The requesting site's doctor acknowledges; a nurse or the expert cannot.
    for refused in (w.nurse, w.expert):
        with pytest.raises(Forbidden):
            await w.clinic.opinions.acknowledge(refused.actor, second.id)
    acked = await w.clinic.opinions.acknowledge(w.doctor.actor, second.id)
    assert acked.acknowledged_by == w.doctor.id and acked.acknowledged_at is not None
    again = await w.clinic.opinions.acknowledge(w.doctor.actor, second.id)
    assert again.acknowledged_at == acked.acknowledged_at
    kinds = [e.kind for e in await w.clinic.consultations.timeline(w.doctor.actor, cid)]
    assert kinds == [
        "requested",
        "accepted",
        "opinion_filed",
        "opinion_filed",
        "opinion_acknowledged",
    ]


async def test_verify_finds_every_changed_byte(world: World, database: Database) -> None:
    w = world
    cid = await _accepted(w)
    opinion = await w.clinic.opinions.file(w.expert, cid, FIELDS)
    assert [v.check for v in await w.clinic.opinions.verify()] == [Check.ok]

    async def tamper(**values: object) -> Check:
        async with database.engine.begin() as conn:
            await conn.execute(update(opinions).where(opinions.c.id == opinion.id).values(**values))
        (found,) = await w.clinic.opinions.verify(cid)
        async with database.engine.begin() as conn:
            await conn.execute(
                update(opinions)
                .where(opinions.c.id == opinion.id)
                .values(
                    body_sealed=opinion.body_sealed,
                    signature=opinion.signature,
                    version=opinion.version,
                    author_id=opinion.author_id,
                    key_id=opinion.key_id,
                )
            )
        return found.check

    body, signature = bytearray(opinion.body_sealed), bytearray(opinion.signature)
    for i in (0, 20, len(body) // 2, len(body) - 1):
        changed = bytearray(body)
        changed[i] ^= 0x01
        assert await tamper(body_sealed=bytes(changed)) in (Check.unreadable,), i
    for i in (0, 31, 63):
        changed = bytearray(signature)
        changed[i] ^= 0x80
        assert await tamper(signature=bytes(changed)) is Check.bad_signature, i
    assert await tamper(version=7) is Check.mismatch
    assert await tamper(author_id=w.expert2.id) is Check.mismatch
    assert await tamper(key_id="0" * 32) is Check.mismatch
    assert [v.check for v in await w.clinic.opinions.verify()] == [Check.ok]


async def test_a_purged_consultation_is_shredded_records_included(world: World) -> None:
    w = world
    cid = await _accepted(w)
    await w.clinic.opinions.file(w.expert, cid, FIELDS)
    request = await w.clinic.requests.of_consultation(cid)
    assert request is not None
    assert w.keystore.destroy_key(cid)
    assert (await w.clinic.requests.reason(request)).state is TextState.shredded
    c = await w.clinic.consultations.get(w.doctor.actor, cid)
    assert (await w.clinic.consultations.patient_name(c)).state is TextState.shredded
    (opinion,) = await w.clinic.opinions.versions(w.doctor.actor, cid)
    reading = await w.clinic.opinions.read(opinion)
    assert reading.check is Check.shredded and reading.fields is None
    (verification,) = await w.clinic.opinions.verify(cid)
    assert verification.check is Check.shredded and not verification.failed
    # The rest of the record stands: who, when, what state.
    assert request.status == "accepted"
    assert (await w.clinic.consultations.appointment(cid)) is not None
    # Nothing new can be sealed for it (no new key appears behind the purge's back).
    with pytest.raises(Exception) as refused:
        await w.clinic.opinions.file(w.expert, cid, FIELDS, supersedes=opinion.id)
    assert getattr(refused.value, "code", None) == "shredded"
    assert not w.keystore.has_key(cid)
