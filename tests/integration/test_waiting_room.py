"""The waiting room, enforced by the server: until a host lets them in, a patient or a guest
gets no seat, no media session, no names of the others, and may do nothing but wait."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from media.clips import Clip
from rooms.roles import Role
from signaling import protocol as p
from signaling.bot import Bot
from signaling.room.members import WAITING_ROOM_CAP
from tests.integration.conftest import Harness


def _last(bot: Bot, kind: type[p._Message]) -> p._Message | None:
    found = [e for e in bot.events if isinstance(e, kind)]
    return found[-1] if found else None


def _waiting_ids(bot: Bot) -> list[str]:
    listing = _last(bot, p.WaitingRoom)
    return [w.id for w in listing.waiting] if isinstance(listing, p.WaitingRoom) else []


async def _arrive(bot: Bot) -> None:
    """Connect a bot that is put in the waiting room."""
    await bot.connect(may_wait=True)
    assert bot.joined is None and _last(bot, p.Waiting) is not None


def _place(bot: Bot) -> tuple[int, int] | None:
    waiting = _last(bot, p.Waiting)
    return (waiting.position, waiting.total) if isinstance(waiting, p.Waiting) else None


def _audited(harness: Harness) -> list[str]:
    return [e["action"] for e in harness.server.audit.entries()]


async def test_a_patient_waits_with_nothing_of_the_call_until_admitted(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    media = {"video": video_clip, "audio": audio_clip}
    doctor = harness.bot(harness.token(consultation, Role.doctor, name="Dr. Li"), **media)
    expert = harness.bot(harness.token(consultation, Role.expert), **media)
    await doctor.connect()
    await expert.connect()
    patient = harness.bot(
        harness.token(consultation, Role.patient, name="Zhang Ayi", waiting_room=None), **media
    )
    await _arrive(patient)
    waiting = _last(patient, p.Waiting)
    assert isinstance(waiting, p.Waiting) and (waiting.position, waiting.total) == (1, 1)
    assert waiting.resumeToken  # a dropped socket can get its place in line back

    # The doctor sees who waits, by name; the expert (who may not admit) does not.
    assert await doctor.wait_for(lambda: len(_waiting_ids(doctor)) == 1, 5)
    listing = _last(doctor, p.WaitingRoom)
    assert isinstance(listing, p.WaitingRoom)
    (info,) = listing.waiting
    assert (info.name, info.role) == ("Zhang Ayi", "patient")
    assert _last(expert, p.WaitingRoom) is None

    # Nothing of the call reaches the waiting patient, and nothing of theirs the call.
    assert patient.joined is None and patient.pc is None and patient.offers == 0
    names = json.dumps([e.model_dump() for e in patient.events], ensure_ascii=False)
    assert "Dr. Li" not in names and doctor.participant_id not in names
    for message in (
        p.Mute(type="mute", kind="audio", muted=True),
        p.Record(type="record", action="start"),
        p.Answer(type="answer", sdp="v=0\r\n"),
    ):
        await patient.send(message)
    assert await patient.wait_for(lambda: len(patient.errors) == 3, 5)
    assert {e.code for e in patient.errors} == {"not_admitted"}
    assert harness.worker.stats().sessions == 2
    assert len(await harness.server.store.participants(consultation)) == 2

    await doctor.send(p.Admit(type="admit", participantId=info.id))
    assert await patient.wait_for(lambda: patient.joined is not None, 5)
    assert patient.participant_id == info.id
    assert await doctor.wait_for(
        lambda: (
            doctor.frames_from(info.id, "video") > 20
            and patient.frames_from(doctor.participant_id, "video") > 20
        ),
        15,
    )
    assert await doctor.wait_for(lambda: _waiting_ids(doctor) == [], 5)
    actions = _audited(harness)
    assert actions.index("waiting") < actions.index("admitted")
    assert "Zhang Ayi" not in harness.server.audit.path.read_text()


async def test_sent_away_with_a_note(harness: Harness, consultation: str) -> None:
    doctor = harness.bot(harness.token(consultation, Role.doctor))
    await doctor.connect()
    guest = harness.bot(harness.token(consultation, Role.observer, waiting_room=None))
    await _arrive(guest)
    assert await doctor.wait_for(lambda: len(_waiting_ids(doctor)) == 1, 5)
    note = "<b>Please call the clinic</b> at 3 pm"
    await doctor.send(
        p.SendAway(type="send_away", participantId=_waiting_ids(doctor)[0], message=note)
    )
    assert await guest.wait_for(lambda: guest.bye is not None, 5)
    assert guest.bye == p.Bye(reason="sent_away", message=note)
    assert await doctor.wait_for(lambda: _waiting_ids(doctor) == [], 5)
    assert "sent_away" in _audited(harness)


async def test_places_in_line_admit_all_and_who_may_admit(
    harness: Harness, consultation: str
) -> None:
    patients = [
        harness.bot(harness.token(consultation, Role.patient, waiting_room=None)) for _ in range(3)
    ]
    for bot in patients:
        await _arrive(bot)
    # Nobody who may admit is here yet: they wait, each with their place.
    assert [_last(b, p.Waiting).position for b in patients] == [1, 2, 3]  # type: ignore[union-attr]
    await patients[0].close()
    assert await patients[2].wait_for(lambda: _place(patients[2]) == (2, 2), 5)

    expert = harness.bot(harness.token(consultation, Role.expert))
    await expert.connect()
    await expert.send(p.AdmitAll(type="admit_all"))
    assert await expert.wait_for(lambda: len(expert.errors) == 1, 5)
    assert expert.errors[0].code == "forbidden"

    # A host arriving later is shown the line at once, and lets everyone in.
    doctor = harness.bot(harness.token(consultation, Role.doctor))
    await doctor.connect()
    assert await doctor.wait_for(lambda: len(_waiting_ids(doctor)) == 2, 5)
    await doctor.send(p.AdmitAll(type="admit_all"))
    for bot in patients[1:]:
        assert await bot.wait_for(lambda bot=bot: bot.joined is not None, 5)
    assert await doctor.wait_for(lambda: _waiting_ids(doctor) == [], 5)
    assert harness.worker.stats().sessions == 4


async def test_the_waiting_room_is_bounded_and_ending_reaches_it(
    harness: Harness, consultation: str
) -> None:
    waiters = [
        harness.bot(harness.token(consultation, Role.observer, waiting_room=None))
        for _ in range(WAITING_ROOM_CAP)
    ]
    await asyncio.gather(*(_arrive(bot) for bot in waiters))
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(harness.base_url + "/ws")
        token = harness.token(consultation, Role.observer, waiting_room=None)
        await ws.send_str(json.dumps({"type": "join", "token": token}))
        reply = json.loads((await ws.receive(timeout=5)).data)
        assert reply["code"] == "waiting_room_full"

    doctor = harness.bot(harness.token(consultation, Role.doctor))
    await doctor.connect()
    await doctor.send(p.End(type="end"))
    for bot in waiters:
        assert await bot.wait_for(lambda bot=bot: bot.bye is not None, 5)
        assert bot.bye is not None and bot.bye.reason == "consultation_ended"


async def test_reconnecting_while_waiting_keeps_the_place(
    harness: Harness, consultation: str
) -> None:
    from signaling.tokens import mint

    def token() -> str:
        return mint(harness.config.secret, consultation_id=consultation, kind="joint",
                    identity="rel-7", name="N", role=Role.patient)  # fmt: skip

    first = harness.bot(token())
    await _arrive(first)
    other = harness.bot(harness.token(consultation, Role.patient, waiting_room=None))
    await _arrive(other)
    again = harness.bot(token())
    await _arrive(again)
    assert await first.wait_for(lambda: first.bye is not None, 5)
    assert "replaced" in first.bye.reason  # type: ignore[union-attr]
    # Two in line, not three: the newer socket took the older one's place.
    assert _last(again, p.Waiting).total == 2  # type: ignore[union-attr]
