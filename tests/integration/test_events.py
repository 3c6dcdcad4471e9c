"""The event stream through a real call: every step published once, in order, with opaque
ids only and the audit head anchoring each."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import aiohttp

from recordings.bench import record_synthetic_call
from rooms.roles import Role
from signaling import events as ev
from signaling import protocol as p
from signaling.bot import Bot
from tests.integration.conftest import Harness

DOCTOR, PATIENT = "Dr. Wang Jian 王建", "Zhao Meiling 赵美玲"


def _last_state(bot: Bot) -> str | None:
    states = [e for e in bot.events if isinstance(e, p.RecordingState)]
    return states[-1].state if states else None


NewBot = Callable[[Role, str, bool | None], Bot]


async def run_call(
    new_bot: NewBot, after_first_join: Callable[[], Awaitable[None]] | None = None
) -> tuple[Bot, Bot]:
    """A doctor, a patient let in from the waiting room, a recording agreed to and stopped,
    the patient leaving, the doctor ending the consultation. ``new_bot(role, name,
    waiting_room)`` makes a bot of one consultation."""
    doctor = new_bot(Role.doctor, DOCTOR, False)
    await doctor.connect()
    if after_first_join is not None:
        await after_first_join()
    patient = new_bot(Role.patient, PATIENT, None)
    await patient.connect(may_wait=True)
    assert await doctor.wait_for(
        lambda: any(isinstance(e, p.WaitingRoom) and e.waiting for e in doctor.events), 5
    )
    waiting = [e for e in doctor.events if isinstance(e, p.WaitingRoom) and e.waiting][-1]
    await doctor.send(p.Admit(type="admit", participantId=waiting.waiting[0].id))
    assert await patient.wait_for(lambda: patient.joined is not None, 5)
    await doctor.send(p.Record(type="record", action="start"))
    assert await patient.wait_for(
        lambda: any(isinstance(e, p.ConsentRequest) for e in patient.events), 5
    )
    await patient.send(p.Consent(type="consent", granted=True))
    assert await doctor.wait_for(lambda: _last_state(doctor) == "recording", 5)
    await doctor.send(p.Record(type="record", action="stop"))
    assert await doctor.wait_for(lambda: _last_state(doctor) == "stopped", 5)
    await patient.close()
    assert await doctor.wait_for(
        lambda: any(isinstance(e, p.ParticipantLeft) for e in doctor.events), 5
    )
    await doctor.send(p.End(type="end"))
    assert await doctor.wait_for(lambda: doctor.bye is not None, 5)
    await doctor.close()
    return doctor, patient


CALL = [
    "consultation_started",
    "participant_joined",  # the doctor
    "participant_joined",  # the patient, on being let in
    "participant_admitted",
    "recording_started",
    "recording_stopped",
    "participant_left",  # the patient
    "participant_left",  # the doctor, ended
    "consultation_ended",
]


async def test_a_call_publishes_each_step_once_with_ids_only(
    harness: Harness, consultation: str
) -> None:
    seen: list[ev.BaseEvent] = []
    harness.server.events.subscribe(seen.append)
    doctor, patient = await run_call(
        lambda role, name, waits: harness.bot(
            harness.token(consultation, role, name, waiting_room=waits)
        )
    )
    assert await doctor.wait_for(lambda: len(seen) >= len(CALL), 5)
    await asyncio.sleep(0.2)  # nothing more comes

    assert [e.type for e in seen] == CALL  # type: ignore[attr-defined]
    assert len({e.id for e in seen}) == len(seen)
    assert {e.consultation for e in seen} == {consultation}
    by_type = {e.type: e for e in seen}  # type: ignore[attr-defined]
    joined = [e for e in seen if isinstance(e, ev.ParticipantJoined)]
    assert [(e.participant, e.role) for e in joined] == [
        (doctor.participant_id, Role.doctor),
        (patient.participant_id, Role.patient),
    ]
    admitted = by_type["participant_admitted"]
    assert isinstance(admitted, ev.ParticipantAdmitted)
    assert admitted.participant == patient.participant_id
    assert admitted.identity == joined[1].identity and admitted.by == joined[0].identity
    started, stopped = by_type["recording_started"], by_type["recording_stopped"]
    assert isinstance(started, ev.RecordingStarted) and isinstance(stopped, ev.RecordingStopped)
    assert started.recording == stopped.recording and stopped.reason == "stopped"
    assert started.requested_by == doctor.participant_id
    ended = by_type["consultation_ended"]
    assert isinstance(ended, ev.ConsultationEnded) and ended.reason == "ended"

    # Anchored: each event carries the audit head at its publication, which only grows, and
    # names an entry that is in the log.
    seqs = [e.audit.seq for e in seen if e.audit is not None]
    assert len(seqs) == len(seen) and seqs == sorted(seqs)
    macs = {entry["seq"]: entry["mac"] for entry in harness.server.audit.entries()}
    assert all(macs[e.audit.seq] == e.audit.mac for e in seen if e.audit is not None)

    # No name anywhere, in any spelling a serializer might produce.
    text = json.dumps([e.model_dump(mode="json") for e in seen], ensure_ascii=False)
    for name in (DOCTOR, PATIENT, "Wang", "Zhao", "王建", "赵美玲"):
        assert name not in text
    # Each event parses back as itself through the discriminated union.
    adapter = ev.event_adapter()
    assert [adapter.validate_json(e.model_dump_json()) for e in seen] == seen


async def test_a_call_that_empties_ends_with_everyone_left(
    harness: Harness, consultation: str
) -> None:
    seen: list[ev.BaseEvent] = []
    harness.server.events.subscribe(seen.append)
    bot = harness.bot(harness.token(consultation, Role.expert))
    await bot.connect()
    await bot.close()
    assert await bot.wait_for(lambda: len(seen) == 4, 5)
    assert [e.type for e in seen] == [  # type: ignore[attr-defined]
        "consultation_started",
        "participant_joined",
        "participant_left",
        "consultation_ended",
    ]
    assert isinstance(seen[-1], ev.ConsultationEnded) and seen[-1].reason == "everyone_left"


async def test_a_composed_recording_publishes_recording_ready(
    harness: Harness, consultation: str
) -> None:
    seen: list[ev.BaseEvent] = []
    harness.server.events.subscribe(seen.append)
    rec, _ = record_synthetic_call(harness.server.recording_store, consultation, seconds=1.0)
    token = harness.token(consultation, Role.doctor)
    url = f"{harness.base_url}/api/consultations/{consultation}/recordings/{rec.recording}/compose"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.post(url) as r:
            assert r.status == 202
        async with asyncio.timeout(120):
            while True:
                async with http.get(url) as r:
                    if (await r.json())["state"] != "running":
                        break
                await asyncio.sleep(0.2)
    assert [(e.type, e.recording) for e in seen] == [  # type: ignore[attr-defined]
        ("recording_ready", rec.recording)
    ]
