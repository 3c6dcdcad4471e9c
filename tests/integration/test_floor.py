"""Floor control in a ward round is enforced by the Worker: a remote expert without the
floor reaches nobody, whatever their client sends, until the attending gives it."""

from __future__ import annotations

import asyncio

from media.clips import Clip
from rooms.consultation import ConsultationKind
from rooms.roles import Role
from signaling import protocol as p
from signaling.bot import Bot
from tests.integration.conftest import Harness

WARD = ConsultationKind.ward_round


def _floor(bot: Bot) -> p.FloorState | None:
    states = [e for e in bot.events if isinstance(e, p.FloorState)]
    return states[-1] if states else None


def _errors(bot: Bot, ref: str) -> list[p.Error]:
    return [e for e in bot.errors if e.ref == ref]


async def test_remote_experts_join_held_and_speak_only_with_the_floor(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    media = {"video": video_clip, "audio": audio_clip}
    attending = harness.bot(harness.token(consultation, Role.doctor, kind=WARD), **media)
    bedside = harness.bot(harness.token(consultation, Role.nurse, kind=WARD), **media)
    expert = harness.bot(harness.token(consultation, Role.expert, kind=WARD), **media)
    other = harness.bot(harness.token(consultation, Role.expert, kind=WARD), **media)
    for bot in (attending, bedside, expert, other):
        await bot.connect()
    eid, oid, nid = expert.participant_id, other.participant_id, bedside.participant_id
    assert eid and oid and nid

    # The bedside is heard; the experts' audio is paused at the Worker from the start
    # though their bots send it all along (their video is forwarded).
    assert await attending.wait_for(lambda: attending.frames_from(nid, "audio") > 20, 15)
    assert await attending.wait_for(lambda: attending.frames_from(eid, "video") > 20, 15)
    assert attending.frames_from(eid, "audio") == 0
    assert other.frames_from(eid, "audio") == 0
    state = _floor(attending)
    assert state is not None and state.holder is None and set(state.held) == {eid, oid}
    # The bedside, shown large: the first nurse, unless the attending marks another.
    assert state.bedside == nid
    await expert.send(p.SetBedside(type="set_bedside", participantId=eid))
    assert await expert.wait_for(lambda: bool(_errors(expert, "set_bedside")), 5)
    await attending.send(p.SetBedside(type="set_bedside", participantId=oid))
    assert await bedside.wait_for(
        lambda: (s := _floor(bedside)) is not None and s.bedside == oid, 5
    )
    await attending.send(p.SetBedside(type="set_bedside"))
    assert await bedside.wait_for(
        lambda: (s := _floor(bedside)) is not None and s.bedside == nid, 5
    )
    worker_room = harness.worker.room(consultation)
    assert worker_room is not None
    (producer,) = [x for x in worker_room.producers.values()
                   if x.participant_id == eid and x.kind == "audio"]  # fmt: skip
    assert producer.paused and producer.frames_paused > 10

    # Unmuting oneself without the floor is refused, and changes nothing.
    await expert.send(p.Mute(type="mute", kind="audio", muted=False))
    assert await expert.wait_for(lambda: bool(_errors(expert, "mute")), 5)
    assert _errors(expert, "mute")[0].code == "forbidden"

    # A hand goes up; everyone sees the queue in order.
    await other.send(p.RaiseHand(type="raise_hand"))
    await expert.send(p.RaiseHand(type="raise_hand"))
    assert await bedside.wait_for(
        lambda: (s := _floor(bedside)) is not None and s.hands == [oid, eid], 5
    )

    # Only the attending runs the floor.
    await other.send(p.GiveFloor(type="give_floor", participantId=oid))
    await bedside.send(p.MuteAllButMe(type="mute_all_but_me"))
    assert await other.wait_for(lambda: bool(_errors(other, "give_floor")), 5)
    assert await bedside.wait_for(lambda: bool(_errors(bedside, "mute_all_but_me")), 5)
    assert _errors(other, "give_floor")[0].code == "forbidden"
    assert _errors(bedside, "mute_all_but_me")[0].code == "forbidden"
    assert attending.frames_from(oid, "audio") == 0

    # The floor given: the expert is heard by everyone, their hand down.
    await attending.send(p.GiveFloor(type="give_floor", participantId=eid))
    assert await bedside.wait_for(lambda: bedside.frames_from(eid, "audio") > 20, 5)
    assert await other.wait_for(lambda: other.frames_from(eid, "audio") > 20, 5)
    state = _floor(attending)
    assert state is not None and state.holder == eid and state.hands == [oid]
    assert not producer.paused

    # Given to the other: the first is paused again, the second heard.
    await attending.send(p.GiveFloor(type="give_floor", participantId=oid))
    assert await attending.wait_for(lambda: attending.frames_from(oid, "audio") > 20, 5)
    await asyncio.sleep(0.3)
    heard = attending.frames_from(eid, "audio")
    await asyncio.sleep(1.0)
    assert attending.frames_from(eid, "audio") == heard
    assert producer.paused

    # Taken back: silent again.
    await attending.send(p.TakeFloor(type="take_floor", participantId=oid))
    assert await bedside.wait_for(
        lambda: (s := _floor(bedside)) is not None and s.holder is None and oid in s.held, 5
    )
    await asyncio.sleep(0.3)
    heard = bedside.frames_from(oid, "audio")
    await asyncio.sleep(1.0)
    assert bedside.frames_from(oid, "audio") == heard


async def test_mute_all_but_me_pauses_every_other_voice(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    media = {"video": video_clip, "audio": audio_clip}
    attending = harness.bot(harness.token(consultation, Role.doctor, kind=WARD), **media)
    bedside = harness.bot(harness.token(consultation, Role.nurse, kind=WARD), **media)
    expert = harness.bot(harness.token(consultation, Role.expert, kind=WARD), **media)
    for bot in (attending, bedside, expert):
        await bot.connect()
    aid, nid, eid = attending.participant_id, bedside.participant_id, expert.participant_id
    assert aid and nid and eid
    await attending.send(p.GiveFloor(type="give_floor", participantId=eid))
    assert await bedside.wait_for(lambda: bedside.frames_from(eid, "audio") > 20, 15)
    assert await expert.wait_for(lambda: expert.frames_from(nid, "audio") > 20, 15)

    await attending.send(p.MuteAllButMe(type="mute_all_but_me"))
    assert await expert.wait_for(lambda: (s := _floor(expert)) is not None and s.holder is None, 5)
    await asyncio.sleep(0.3)
    nurse_heard, expert_heard = expert.frames_from(nid, "audio"), bedside.frames_from(eid, "audio")
    attending_heard = expert.frames_from(aid, "audio")
    await asyncio.sleep(1.0)
    assert expert.frames_from(nid, "audio") == nurse_heard
    assert bedside.frames_from(eid, "audio") == expert_heard
    assert expert.frames_from(aid, "audio") > attending_heard + 20

    # The bedside was muted, not held: it may speak again; the expert may not.
    await bedside.send(p.Mute(type="mute", kind="audio", muted=False))
    assert await expert.wait_for(lambda: expert.frames_from(nid, "audio") > nurse_heard + 20, 5)
    await expert.send(p.Mute(type="mute", kind="audio", muted=False))
    assert await expert.wait_for(lambda: bool(_errors(expert, "mute")), 5)


async def test_no_floor_outside_a_ward_round(harness: Harness, consultation: str) -> None:
    doctor = harness.bot(harness.token(consultation, Role.doctor))
    expert = harness.bot(harness.token(consultation, Role.expert))
    await doctor.connect()
    await expert.connect()
    await expert.send(p.RaiseHand(type="raise_hand"))
    assert await expert.wait_for(lambda: bool(_errors(expert, "raise_hand")), 5)
    assert _errors(expert, "raise_hand")[0].code == "unexpected"
    assert _floor(expert) is None


def _camera_requests(bot: Bot) -> list[p.CameraRequest]:
    return [e for e in bot.events if isinstance(e, p.CameraRequest)]


async def test_far_end_camera_control_with_the_floor_and_the_bedside_may_refuse(
    harness: Harness, consultation: str
) -> None:
    attending = harness.bot(harness.token(consultation, Role.doctor, kind=WARD))
    bedside = harness.bot(harness.token(consultation, Role.nurse, kind=WARD))
    expert = harness.bot(harness.token(consultation, Role.expert, kind=WARD))
    for bot in (attending, bedside, expert):
        await bot.connect()
    nid, eid = bedside.participant_id, expert.participant_id
    assert nid and eid

    def move(**axes: int) -> p.CameraControl:
        return p.CameraControl(type="camera_control", participantId=nid, **axes)

    # Without the floor: forbidden, nothing reaches the bedside.
    await expert.send(move(zoom=1))
    assert await expert.wait_for(lambda: bool(_errors(expert, "camera_control")), 5)
    assert _errors(expert, "camera_control")[-1].code == "forbidden"

    # With the floor, but the bedside's camera said it cannot move: a typed error.
    await attending.send(p.GiveFloor(type="give_floor", participantId=eid))
    assert await expert.wait_for(lambda: (s := _floor(expert)) is not None and s.holder == eid, 5)
    await expert.send(move(pan=1))
    assert await expert.wait_for(lambda: len(_errors(expert, "camera_control")) == 2, 5)
    assert _errors(expert, "camera_control")[-1].code == "camera_unsupported"

    # The bedside's camera can zoom (not pan): a zoom is asked of the bedside page.
    await bedside.send(p.CameraCaps(type="camera_caps", zoom=True))
    await asyncio.sleep(0.2)
    await expert.send(move(pan=1, zoom=2))
    assert await expert.wait_for(lambda: len(_errors(expert, "camera_control")) == 3, 5)
    assert _errors(expert, "camera_control")[-1].code == "camera_unsupported"
    await expert.send(move(zoom=2))
    assert await bedside.wait_for(lambda: bool(_camera_requests(bedside)), 5)
    (request,) = _camera_requests(bedside)
    assert request.participantId == eid and request.zoom == 2 and request.pan is None

    # The bedside refuses: the expert is told; an answer to no request is refused.
    await bedside.send(
        p.CameraResult(
            type="camera_result", requestId=request.requestId, applied=False, reason="refused"
        )
    )
    assert await expert.wait_for(
        lambda: any(isinstance(e, p.CameraAnswer) for e in expert.events), 5
    )
    answer = next(e for e in expert.events if isinstance(e, p.CameraAnswer))
    assert answer.applied is False and answer.reason == "refused"
    await bedside.send(
        p.CameraResult(type="camera_result", requestId=request.requestId, applied=True)
    )
    assert await bedside.wait_for(lambda: bool(_errors(bedside, "camera_result")), 5)

    # The floor taken back: no more moves.
    await attending.send(p.TakeFloor(type="take_floor", participantId=eid))
    assert await expert.wait_for(lambda: (s := _floor(expert)) is not None and s.holder is None, 5)
    await expert.send(move(zoom=1))
    assert await expert.wait_for(lambda: len(_errors(expert, "camera_control")) == 4, 5)
    assert _errors(expert, "camera_control")[-1].code == "forbidden"
    assert len(_camera_requests(bedside)) == 1
