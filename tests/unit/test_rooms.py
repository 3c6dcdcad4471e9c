from __future__ import annotations

import asyncio
import logging

import pytest

from rooms.consultation import (
    PARTICIPANT_CAP,
    ConsultationKind,
    Participant,
    new_consultation_id,
    new_participant_id,
    validate_consultation_id,
)
from rooms.errors import (
    ConsultationEnded,
    ConsultationFull,
    InvalidConsultationId,
    KindMismatch,
    UnknownParticipant,
)
from rooms.memory import InMemoryRoomStore
from rooms.roles import PERMISSIONS, Permission, Role, can
from rooms.store import RoomStore

CID = "consult-1"
SECRET_NAME = "Wang Xiaoming"


def person(identity: str, role: Role = Role.expert, name: str = SECRET_NAME) -> Participant:
    return Participant(
        id=new_participant_id(), identity=identity, name=name, role=role, joined_at=0.0
    )


# ------------------------------------------------------------------ roles


def test_doctor_has_every_permission() -> None:
    assert PERMISSIONS[Role.doctor] == frozenset(Permission)
    assert all(can(Role.doctor, p) for p in Permission)


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.expert, {Permission.publish, Permission.subscribe, Permission.view_recordings}),
        (Role.patient, {Permission.publish, Permission.subscribe}),
        (Role.observer, {Permission.subscribe}),
    ],
)
def test_permissions_per_role(role: Role, allowed: set[Permission]) -> None:
    assert PERMISSIONS[role] == allowed
    for permission in Permission:
        assert can(role, permission) is (permission in allowed)


def test_every_role_has_an_entry() -> None:
    assert set(PERMISSIONS) == set(Role)


# ------------------------------------------------------------------ values


def test_caps_per_kind() -> None:
    assert dict(PARTICIPANT_CAP) == {
        ConsultationKind.one_to_one: 2,
        ConsultationKind.joint: 8,
        ConsultationKind.ward_round: 12,
    }


def test_repr_and_str_never_show_the_name(caplog: pytest.LogCaptureFixture) -> None:
    p = person("u-1")
    assert SECRET_NAME not in repr(p)
    assert SECRET_NAME not in str(p)
    assert SECRET_NAME not in repr([p])
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("joined %s", p)
    assert SECRET_NAME not in caplog.text
    assert p.name == SECRET_NAME


@pytest.mark.parametrize("bad", ["", "short", "a" * 65, "has space", "Zhang/San", "é" * 8, None])
def test_bad_consultation_ids_are_refused(bad: object) -> None:
    with pytest.raises(InvalidConsultationId) as err:
        validate_consultation_id(bad)
    assert err.value.code == "forbidden"
    if isinstance(bad, str) and bad:
        assert bad not in str(err.value)


def test_generated_ids_are_valid_and_distinct() -> None:
    ids = {new_consultation_id() for _ in range(100)}
    assert len(ids) == 100
    for cid in ids:
        assert validate_consultation_id(cid) == cid
    assert validate_consultation_id("a" * 64)
    pid = new_participant_id()
    assert pid.startswith("P") and len(pid) > 4


# ------------------------------------------------------------------ store


def test_in_memory_store_satisfies_the_protocol() -> None:
    assert isinstance(InMemoryRoomStore(), RoomStore)


async def test_first_join_creates_the_consultation() -> None:
    store = InMemoryRoomStore(clock=lambda: 42.0)
    assert await store.get(CID) is None
    doctor = person("u-doc", Role.doctor)
    consultation, replaced = await store.join(CID, ConsultationKind.joint, doctor)
    assert replaced is None
    assert consultation.id == CID
    assert consultation.kind is ConsultationKind.joint
    assert consultation.created_at == 42.0
    assert not consultation.ended
    assert await store.get(CID) == consultation
    assert await store.participants(CID) == [doctor]


async def test_join_refuses_a_bad_consultation_id() -> None:
    with pytest.raises(InvalidConsultationId):
        await InMemoryRoomStore().join("no", ConsultationKind.joint, person("u-1"))


@pytest.mark.parametrize("kind", list(ConsultationKind))
async def test_cap_per_kind(kind: ConsultationKind) -> None:
    store = InMemoryRoomStore()
    cap = PARTICIPANT_CAP[kind]
    for i in range(cap):
        await store.join(CID, kind, person(f"u-{i}"))
    with pytest.raises(ConsultationFull) as err:
        await store.join(CID, kind, person("u-one-too-many"))
    assert err.value.code == "consultation_full"
    assert len(await store.participants(CID)) == cap


@pytest.mark.parametrize("kind", list(ConsultationKind))
async def test_concurrent_joins_for_the_last_seats_never_exceed_the_cap(
    kind: ConsultationKind,
) -> None:
    store = InMemoryRoomStore()
    cap = PARTICIPANT_CAP[kind]
    await store.join(CID, kind, person("u-first"))
    results = await asyncio.gather(
        *(store.join(CID, kind, person(f"u-{i}")) for i in range(cap * 3)),
        return_exceptions=True,
    )
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(admitted) == cap - 1
    assert all(isinstance(r, ConsultationFull) for r in refused)
    assert len(await store.participants(CID)) == cap


async def test_same_identity_replaces_and_does_not_count_against_the_cap() -> None:
    store = InMemoryRoomStore()
    doctor = person("u-doc", Role.doctor)
    patient = person("u-pat", Role.patient)
    await store.join(CID, ConsultationKind.one_to_one, doctor)
    await store.join(CID, ConsultationKind.one_to_one, patient)
    doctor_again = person("u-doc", Role.doctor)
    _, replaced = await store.join(CID, ConsultationKind.one_to_one, doctor_again)
    assert replaced == doctor
    # The newcomer goes to the end of the join order; the old session is gone.
    assert await store.participants(CID) == [patient, doctor_again]
    assert await store.leave(CID, doctor.id) is None
    assert await store.participants(CID) == [patient, doctor_again]


async def test_participants_in_join_order() -> None:
    store = InMemoryRoomStore()
    people = [person(f"u-{i}") for i in range(5)]
    for p in people:
        await store.join(CID, ConsultationKind.joint, p)
    assert await store.participants(CID) == people
    assert await store.participants("unknown-id") == []


async def test_kind_mismatch_is_refused() -> None:
    store = InMemoryRoomStore()
    await store.join(CID, ConsultationKind.one_to_one, person("u-1"))
    with pytest.raises(KindMismatch) as err:
        await store.join(CID, ConsultationKind.ward_round, person("u-2"))
    assert err.value.code == "forbidden"
    assert len(await store.participants(CID)) == 1


async def test_ended_consultation_refuses_joins_and_returns_who_was_in_it() -> None:
    store = InMemoryRoomStore()
    a, b = person("u-a"), person("u-b")
    await store.join(CID, ConsultationKind.joint, a)
    await store.join(CID, ConsultationKind.joint, b)
    assert await store.end(CID) == [a, b]
    assert await store.participants(CID) == []
    consultation = await store.get(CID)
    assert consultation is not None and consultation.ended
    with pytest.raises(ConsultationEnded) as err:
        await store.join(CID, ConsultationKind.joint, person("u-c"))
    assert err.value.code == "consultation_ended"
    # Even the same people reconnecting cannot reopen it.
    with pytest.raises(ConsultationEnded):
        await store.join(CID, ConsultationKind.joint, person("u-a"))
    assert await store.end(CID) == []
    assert await store.end("never-existed") == []


async def test_ended_consultation_survives_everyone_leaving_until_its_tombstone_expires() -> None:
    now = [1000.0]
    store = InMemoryRoomStore(clock=lambda: now[0], tombstone_ttl_s=60)
    a = person("u-a")
    await store.join(CID, ConsultationKind.joint, a)
    await store.end(CID)
    await store.leave(CID, a.id)
    now[0] += 59
    with pytest.raises(ConsultationEnded):
        await store.join(CID, ConsultationKind.joint, person("u-b"))
    now[0] += 2
    assert await store.get(CID) is None


async def test_last_leave_forgets_a_live_consultation() -> None:
    store = InMemoryRoomStore()
    a, b = person("u-a"), person("u-b")
    await store.join(CID, ConsultationKind.one_to_one, a)
    await store.join(CID, ConsultationKind.one_to_one, b)
    assert await store.leave(CID, a.id) == a
    assert await store.leave(CID, a.id) is None  # idempotent
    assert await store.get(CID) is not None
    assert await store.leave(CID, b.id) == b
    assert await store.get(CID) is None
    assert await store.consultations() == []
    # Forgotten means a fresh start, even with another kind.
    consultation, _ = await store.join(CID, ConsultationKind.joint, person("u-c"))
    assert consultation.kind is ConsultationKind.joint
    assert await store.leave("unknown-id", "P0") is None


async def test_set_muted() -> None:
    store = InMemoryRoomStore()
    a = person("u-a")
    await store.join(CID, ConsultationKind.joint, a)
    updated = await store.set_muted(CID, a.id, "audio", True)
    assert updated.audio_muted and not updated.video_muted
    updated = await store.set_muted(CID, a.id, "video", True)
    assert updated.audio_muted and updated.video_muted
    assert (await store.participants(CID)) == [updated]
    assert not a.audio_muted  # values handed out earlier are never mutated
    with pytest.raises(UnknownParticipant):
        await store.set_muted(CID, "P-nobody", "audio", True)
    with pytest.raises(UnknownParticipant):
        await store.set_muted("unknown-id", a.id, "audio", True)


async def test_consultations_lists_live_and_ended() -> None:
    store = InMemoryRoomStore()
    await store.join("room-aaa", ConsultationKind.joint, person("u-a"))
    await store.join("room-bbb", ConsultationKind.ward_round, person("u-b"))
    await store.end("room-bbb")
    listed = {c.id: c.ended for c in await store.consultations()}
    assert listed == {"room-aaa": False, "room-bbb": True}
