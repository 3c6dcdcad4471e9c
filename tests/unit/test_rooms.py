from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis

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
from rooms.redis_store import RedisRoomStore
from rooms.roles import PERMISSIONS, Permission, Role, can
from rooms.store import RoomStore

if TYPE_CHECKING:
    from tests.conftest import RedisServer

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
        (
            Role.expert,
            {
                Permission.publish,
                Permission.subscribe,
                Permission.view_recordings,
                Permission.share_images,
                Permission.share_screen,
            },
        ),
        (Role.patient, {Permission.publish, Permission.subscribe, Permission.share_images}),
        (
            Role.nurse,
            {
                Permission.publish,
                Permission.subscribe,
                Permission.admit,
                Permission.share_images,
                Permission.share_screen,
            },
        ),
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


# ------------------------------------------------------------------ store: the contract
# Every test in this section runs against both implementations (the ``make_store`` fixture).

StoreFactory = Callable[..., RoomStore]


@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Builds stores that share one state: for Redis, one prefix and a client per store, the
    way several signaling processes share one Redis."""
    if request.param == "memory":
        shared: list[InMemoryRoomStore] = []

        def make_memory(**kwargs: Any) -> RoomStore:
            assert not shared, "in-memory stores cannot share state"
            shared.append(InMemoryRoomStore(**kwargs))
            return shared[0]

        yield make_memory
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"t{secrets.token_hex(4)}:"
    made: list[RedisRoomStore] = []

    def make_redis(**kwargs: Any) -> RoomStore:
        client = aioredis.Redis(host=server.host, port=server.port)
        made.append(RedisRoomStore(client, prefix=prefix, **kwargs))
        return made[-1]

    yield make_redis
    for s in made:
        await s.close()


@pytest.fixture
def store(make_store: StoreFactory) -> RoomStore:
    return make_store()


def test_stores_satisfy_the_protocol(store: RoomStore) -> None:
    assert isinstance(store, RoomStore)


async def test_first_join_creates_the_consultation(make_store: StoreFactory) -> None:
    store = make_store(clock=lambda: 42.0)
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


async def test_participants_round_trip_exactly(store: RoomStore) -> None:
    # A real timestamp keeps all its digits, and any display name survives, muted state too.
    p = Participant(
        id=new_participant_id(),
        identity='u-"quoted"/\\ü',
        name='王小明 "Xiao" \\ 🧑‍⚕️\n',
        role=Role.patient,
        joined_at=time.time(),
        audio_muted=True,
    )
    await store.join(CID, ConsultationKind.joint, p)
    assert await store.participants(CID) == [p]
    updated = await store.set_muted(CID, p.id, "video", True)
    assert updated == replace(p, video_muted=True)
    assert await store.participants(CID) == [updated]
    assert await store.leave(CID, p.id) == updated


async def test_join_refuses_a_bad_consultation_id(store: RoomStore) -> None:
    with pytest.raises(InvalidConsultationId):
        await store.join("no", ConsultationKind.joint, person("u-1"))


@pytest.mark.parametrize("bad", ["no", "a:b:c:d:e", "tc:*", "x" * 65])
async def test_bad_ids_are_simply_unknown_to_reads_and_removals(store: RoomStore, bad: str) -> None:
    assert await store.get(bad) is None
    assert await store.participants(bad) == []
    assert await store.leave(bad, "P0") is None
    assert await store.end(bad) == []
    with pytest.raises(UnknownParticipant):
        await store.set_muted(bad, "P0", "audio", True)
    assert await store.consultations() == []


@pytest.mark.parametrize("kind", list(ConsultationKind))
async def test_cap_per_kind(store: RoomStore, kind: ConsultationKind) -> None:
    cap = PARTICIPANT_CAP[kind]
    for i in range(cap):
        await store.join(CID, kind, person(f"u-{i}"))
    with pytest.raises(ConsultationFull) as err:
        await store.join(CID, kind, person("u-one-too-many"))
    assert err.value.code == "consultation_full"
    assert len(await store.participants(CID)) == cap


@pytest.mark.parametrize("kind", list(ConsultationKind))
async def test_concurrent_joins_for_the_last_seats_never_exceed_the_cap(
    store: RoomStore, kind: ConsultationKind
) -> None:
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


async def test_same_identity_replaces_and_does_not_count_against_the_cap(
    store: RoomStore,
) -> None:
    doctor = person("u-doc", Role.doctor)
    patient = person("u-pat", Role.patient)
    await store.join(CID, ConsultationKind.one_to_one, doctor)
    await store.join(CID, ConsultationKind.one_to_one, patient)
    await store.set_muted(CID, doctor.id, "audio", True)
    doctor_again = person("u-doc", Role.doctor)
    _, replaced = await store.join(CID, ConsultationKind.one_to_one, doctor_again)
    # The replaced one comes back as it was last, so the caller can close that session.
    assert replaced == replace(doctor, audio_muted=True)
    # The newcomer goes to the end of the join order; the old session is gone.
    assert await store.participants(CID) == [patient, doctor_again]
    assert await store.leave(CID, doctor.id) is None
    assert await store.participants(CID) == [patient, doctor_again]
    with pytest.raises(UnknownParticipant):
        await store.set_muted(CID, doctor.id, "audio", False)


async def test_participants_in_join_order(store: RoomStore) -> None:
    people = [person(f"u-{i}") for i in range(5)]
    for p in people:
        await store.join(CID, ConsultationKind.joint, p)
    assert await store.participants(CID) == people
    assert await store.participants("unknown-id") == []
    # Leaving and coming back (a new session) goes to the end.
    await store.leave(CID, people[1].id)
    back = person("u-1")
    await store.join(CID, ConsultationKind.joint, back)
    assert await store.participants(CID) == [people[0], *people[2:], back]


async def test_kind_mismatch_is_refused(store: RoomStore) -> None:
    await store.join(CID, ConsultationKind.one_to_one, person("u-1"))
    with pytest.raises(KindMismatch) as err:
        await store.join(CID, ConsultationKind.ward_round, person("u-2"))
    assert err.value.code == "forbidden"
    assert len(await store.participants(CID)) == 1


async def test_ended_consultation_refuses_joins_and_returns_who_was_in_it(
    store: RoomStore,
) -> None:
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
    # Even the same people reconnecting cannot reopen it, nor another kind of token.
    with pytest.raises(ConsultationEnded):
        await store.join(CID, ConsultationKind.joint, person("u-a"))
    with pytest.raises(ConsultationEnded):
        await store.join(CID, ConsultationKind.one_to_one, person("u-a"))
    assert await store.leave(CID, a.id) is None
    assert await store.end(CID) == []
    assert await store.end("never-existed") == []
    assert (await store.get(CID)) == consultation


async def test_tombstone_expires(make_store: StoreFactory) -> None:
    ttl = 0.3
    store = make_store(tombstone_ttl_s=ttl)
    a = person("u-a")
    await store.join(CID, ConsultationKind.joint, a)
    await store.end(CID)
    await store.leave(CID, a.id)
    with pytest.raises(ConsultationEnded):
        await store.join(CID, ConsultationKind.joint, person("u-b"))
    await asyncio.sleep(ttl + 0.2)
    assert await store.get(CID) is None
    assert await store.consultations() == []
    consultation, _ = await store.join(CID, ConsultationKind.one_to_one, person("u-b"))
    assert not consultation.ended


async def test_last_leave_forgets_a_live_consultation(store: RoomStore) -> None:
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


async def test_set_muted(store: RoomStore) -> None:
    a = person("u-a")
    await store.join(CID, ConsultationKind.joint, a)
    updated = await store.set_muted(CID, a.id, "audio", True)
    assert updated.audio_muted and not updated.video_muted
    updated = await store.set_muted(CID, a.id, "video", True)
    assert updated.audio_muted and updated.video_muted
    assert (await store.participants(CID)) == [updated]
    updated = await store.set_muted(CID, a.id, "audio", False)
    assert not updated.audio_muted and updated.video_muted
    assert (await store.participants(CID)) == [updated]
    assert not a.audio_muted  # values handed out earlier are never mutated
    with pytest.raises(UnknownParticipant):
        await store.set_muted(CID, "P-nobody", "audio", True)
    with pytest.raises(UnknownParticipant):
        await store.set_muted("unknown-id", a.id, "audio", True)
    with pytest.raises(ValueError):
        await store.set_muted(CID, a.id, "screen", True)  # type: ignore[arg-type]


async def test_consultations_lists_live_and_ended(store: RoomStore) -> None:
    await store.join("room-aaa", ConsultationKind.joint, person("u-a"))
    await store.join("room-bbb", ConsultationKind.ward_round, person("u-b"))
    await store.end("room-bbb")
    listed = {c.id: c.ended for c in await store.consultations()}
    assert listed == {"room-aaa": False, "room-bbb": True}


# ------------------------------------------------------------------ store: in memory only


async def test_in_memory_tombstone_expires_on_its_clock() -> None:
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


# ------------------------------------------------------------------ store: Redis only
# Two clients on one Redis stand for two signaling processes.


@pytest.fixture
async def redis_nodes(
    redis_server: RedisServer,
) -> AsyncIterator[tuple[RedisRoomStore, RedisRoomStore, aioredis.Redis, str]]:
    """Two stores on independent clients sharing one prefix, and a third client to inspect."""
    prefix = f"t{secrets.token_hex(4)}:"
    a = RedisRoomStore(aioredis.Redis.from_url(redis_server.url), prefix=prefix)
    # The other node decodes responses: the store works with either kind of client.
    b = RedisRoomStore(
        aioredis.Redis.from_url(redis_server.url, decode_responses=True), prefix=prefix
    )
    inspect = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield a, b, inspect, prefix
    for s in (a, b):
        await s.close()
    await inspect.aclose()


@pytest.mark.parametrize("kind", list(ConsultationKind))
async def test_two_nodes_racing_for_the_last_seats_never_exceed_the_cap(
    redis_nodes: tuple[RedisRoomStore, RedisRoomStore, aioredis.Redis, str],
    kind: ConsultationKind,
) -> None:
    a, b, _, _ = redis_nodes
    cap = PARTICIPANT_CAP[kind]
    for round_ in range(5):
        cid = f"race-{kind.value}-{round_}"
        await a.join(cid, kind, person("u-first"))
        nodes = (a, b)
        results = await asyncio.gather(
            *(nodes[i % 2].join(cid, kind, person(f"u-{i}")) for i in range(cap * 4)),
            return_exceptions=True,
        )
        admitted = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(admitted) == cap - 1
        assert all(isinstance(r, ConsultationFull) for r in refused), refused
        assert len(await a.participants(cid)) == cap
        assert await b.participants(cid) == await a.participants(cid)


async def test_two_nodes_racing_with_the_same_identity_leave_exactly_one(
    redis_nodes: tuple[RedisRoomStore, RedisRoomStore, aioredis.Redis, str],
) -> None:
    a, b, _, _ = redis_nodes
    await a.join(CID, ConsultationKind.one_to_one, person("u-doc", Role.doctor))
    await a.join(CID, ConsultationKind.one_to_one, person("u-pat", Role.patient))
    sessions = [person("u-pat", Role.patient) for _ in range(10)]
    results = await asyncio.gather(
        *((a, b)[i % 2].join(CID, ConsultationKind.one_to_one, s) for i, s in enumerate(sessions))
    )
    present = await b.participants(CID)
    assert [p.identity for p in present] == ["u-doc", "u-pat"]
    # Each session replaced exactly the one before it, whichever node it came through.
    replaced_ids = {r.id for _, r in results if r is not None}
    assert len(replaced_ids) == len(sessions)
    assert present[1].id not in replaced_ids


async def test_last_leave_racing_a_join_on_another_node(
    redis_nodes: tuple[RedisRoomStore, RedisRoomStore, aioredis.Redis, str],
) -> None:
    a, b, _, _ = redis_nodes
    for round_ in range(20):
        cid = f"flip-{round_:02d}"
        last = person("u-last")
        await a.join(cid, ConsultationKind.one_to_one, last)
        newcomer = person("u-new")
        await asyncio.gather(
            a.leave(cid, last.id), b.join(cid, ConsultationKind.one_to_one, newcomer)
        )
        # Either order leaves a live consultation holding only the newcomer.
        assert await a.participants(cid) == [newcomer]
        assert await b.get(cid) is not None


async def test_no_display_name_or_identity_in_any_key(
    redis_nodes: tuple[RedisRoomStore, RedisRoomStore, aioredis.Redis, str],
) -> None:
    a, b, inspect, prefix = redis_nodes
    names = [SECRET_NAME, "王小明", "Zhang San"]
    people = [person(f"identity-{i}", name=n) for i, n in enumerate(names)]
    for p in people:
        await a.join(CID, ConsultationKind.joint, p)
    await b.set_muted(CID, people[0].id, "audio", True)
    await b.join("other-consultation", ConsultationKind.ward_round, person("identity-x"))
    await b.end("other-consultation")
    keys = [k async for k in inspect.scan_iter(match="*", count=1000)]
    ours = [k for k in keys if k.startswith(prefix)]
    assert ours, keys
    for key in ours:
        for secret in [*names, "Wang", "Zhang", *(p.identity for p in people), "identity-x"]:
            assert secret.lower() not in key.lower(), key
    # Only the opaque consultation id names a key.
    assert {k.removeprefix(prefix).split(":")[0] for k in ours} == {"c", "consultations"}
    assert {k.split(":")[2] for k in ours if k != f"{prefix}consultations"} == {
        CID,
        "other-consultation",
    }


async def test_end_sets_the_tombstone_ttl_and_live_keys_have_none(
    redis_nodes: tuple[RedisRoomStore, RedisRoomStore, aioredis.Redis, str],
) -> None:
    a, _, inspect, prefix = redis_nodes
    await a.join(CID, ConsultationKind.joint, person("u-a"))
    meta = f"{prefix}c:{CID}"
    assert await inspect.pttl(meta) == -1  # a live consultation never expires by itself
    await a.end(CID)
    ttl_ms = await inspect.pttl(meta)
    week_ms = 7 * 24 * 3600 * 1000
    assert week_ms - 60_000 < ttl_ms <= week_ms
    # The tombstone is the only key left: no participant data outlives the end.
    assert sorted([k async for k in inspect.scan_iter(match=f"{prefix}c:*")]) == [meta]


async def test_short_tombstone_ttl_and_the_index_forgets_expired_ids(
    redis_server: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    prefix = f"t{secrets.token_hex(4)}:"
    store = RedisRoomStore(client, prefix=prefix, tombstone_ttl_s=0.25)
    try:
        await store.join(CID, ConsultationKind.joint, person("u-a"))
        await store.end(CID)
        assert 0 < await client.pttl(f"{prefix}c:{CID}") <= 250
        assert await client.smembers(f"{prefix}consultations") == {CID}
        await asyncio.sleep(0.4)
        assert await store.consultations() == []
        assert await client.smembers(f"{prefix}consultations") == set()
    finally:
        await store.close()


async def test_nodes_see_each_others_writes(
    redis_nodes: tuple[RedisRoomStore, RedisRoomStore, aioredis.Redis, str],
) -> None:
    a, b, _, _ = redis_nodes
    doctor, patient = person("u-doc", Role.doctor), person("u-pat", Role.patient)
    created, _ = await a.join(CID, ConsultationKind.one_to_one, doctor)
    await b.join(CID, ConsultationKind.one_to_one, patient)
    assert await b.get(CID) == created
    assert await a.participants(CID) == [doctor, patient]
    muted = await b.set_muted(CID, doctor.id, "video", True)
    assert await a.participants(CID) == [muted, patient]
    assert await b.leave(CID, patient.id) == patient
    assert await a.end(CID) == [muted]
    ended = await b.get(CID)
    assert ended is not None and ended.ended
    assert [c.id for c in await b.consultations()] == [CID]


def test_redis_store_refuses_a_non_positive_ttl() -> None:
    with pytest.raises(ValueError):
        RedisRoomStore(aioredis.Redis(), tombstone_ttl_s=0)
