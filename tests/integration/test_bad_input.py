"""Bad input gets a typed error and hurts nobody else; a vanished client leaves nothing."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time

import aiohttp
import pytest

from media.client import WorkerStats
from media.clips import Clip
from rooms.roles import Role
from signaling import protocol as p
from signaling.bot import Bot
from tests.integration.conftest import Harness


async def _ws_join(
    harness: Harness, token: str
) -> tuple[aiohttp.ClientSession, list[dict], int | None]:
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(harness.base_url + "/ws")
    await ws.send_str(json.dumps({"type": "join", "token": token}))
    received = []
    async with asyncio.timeout(5):
        async for msg in ws:
            received.append(json.loads(msg.data))
    return session, received, ws.close_code


@pytest.mark.parametrize(
    ("token_kind", "code"),
    [("garbage", "invalid_token"), ("tampered", "invalid_token"), ("expired", "expired_token")],
)
async def test_bad_tokens_are_refused_with_a_reason(
    harness: Harness, consultation: str, token_kind: str, code: str
) -> None:
    if token_kind == "garbage":
        token = "not-a-jwt"
    elif token_kind == "tampered":
        good = harness.token(consultation, Role.patient)
        head, body, sig = good.split(".")
        token = f"{head}.{body[:-2]}AA.{sig}"
    else:
        token = harness.token(consultation, Role.patient, ttl_s=60, now=time.time() - 3600)
    session, received, close_code = await _ws_join(harness, token)
    await session.close()
    assert received == [
        {"type": "error", "code": code, "message": received[0]["message"], "ref": "join"}
    ]
    assert close_code == 4001
    assert harness.worker.stats().sessions == 0


async def test_full_consultation_is_refused(harness: Harness, consultation: str) -> None:
    from rooms.consultation import ConsultationKind

    kind = ConsultationKind.one_to_one
    first = harness.bot(harness.token(consultation, Role.doctor, kind=kind))
    second = harness.bot(harness.token(consultation, Role.patient, kind=kind))
    await first.connect()
    await second.connect()
    session, received, close_code = await _ws_join(
        harness, harness.token(consultation, Role.expert, kind=kind)
    )
    await session.close()
    assert received[0]["code"] == "consultation_full"
    assert close_code == 4003


async def test_garbage_gets_typed_errors_while_the_call_goes_on(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    a = harness.bot(harness.token(consultation, Role.doctor), video=video_clip, audio=audio_clip)
    b = harness.bot(harness.token(consultation, Role.expert), video=video_clip, audio=audio_clip)
    vandal = harness.bot(harness.token(consultation, Role.patient))
    for bot in (a, b, vandal):
        await bot.connect()
    assert await a.wait_for(lambda: b.frames_from(a.participant_id, "video") > 30, timeout=15)
    await vandal.wait_for(lambda: not (vandal.pc and vandal.pc.signalingState != "stable"), 5)

    garbage: list[tuple[str | bytes, str]] = [
        ("this is not json", "malformed"),
        ("[1, 2, 3]", "malformed"),
        ('{"type": "launch_missiles"}', "unknown_type"),
        ('{"type": "mute", "kind": "smell", "muted": true}', "malformed"),
        ('{"type": "answer"}', "malformed"),
        (json.dumps({"type": "ping", "ts": "x" * (70 * 1024)}), "too_large"),
        (b"\x00\x01binary", "malformed"),
        ('{"type": "answer", "sdp": "v=0 garbage"}', "unexpected"),
        ('{"type": "candidate", "candidate": "candidate:garbage", "sdpMid": "0"}', "bad_candidate"),
        ('{"type": "join", "token": "x"}', "already_joined"),
    ]
    before = b.frames_from(a.participant_id, "video")
    for data, _ in garbage:
        await vandal.send_raw(data)
    expected = [code for _, code in garbage]
    assert await vandal.wait_for(lambda: len(vandal.errors) >= len(expected), timeout=5)
    assert [e.code for e in vandal.errors] == expected
    # Everyone's call goes on, the vandal's socket included.
    assert await b.wait_for(lambda: b.frames_from(a.participant_id, "video") > before + 30, 5)
    await vandal.send(p.Ping(type="ping", ts=1.0))
    assert await vandal.wait_for(lambda: any(isinstance(e, p.Pong) for e in vandal.events), 5)
    assert harness.worker.stats().sessions == 3


async def test_garbage_sdp_answer_is_refused_and_a_good_one_still_accepted(
    harness: Harness, consultation: str, video_clip: Clip
) -> None:
    class GarbageFirst(Bot):
        sent_garbage = False

        async def _answer(self, offer: p.Offer) -> None:
            if not self.sent_garbage:
                self.sent_garbage = True
                await self.send_raw(json.dumps({"type": "answer", "sdp": "v=0\r\nm=nonsense\r\n"}))
            await super()._answer(offer)

    publisher = harness.bot(harness.token(consultation, Role.doctor), video=video_clip)
    await publisher.connect()
    bot = GarbageFirst(harness.base_url, harness.token(consultation, Role.expert))
    harness.bots.append(bot)
    await bot.connect()
    assert await bot.wait_for(lambda: bot.frames_from(publisher.participant_id, "video") > 10, 10)
    assert [e.code for e in bot.errors] == ["bad_sdp"]


async def test_a_refused_answer_is_logged_with_its_reason_and_without_its_sdp(
    harness: Harness, consultation: str, video_clip: Clip, caplog: pytest.LogCaptureFixture
) -> None:
    """The client hears bad_sdp; the log must say so too, or it shows only a later 'no
    answer'. Without the SDP (addresses) and without the client's control characters."""

    class TwoBadAnswersFirst(Bot):
        tampered = False

        async def send(self, message: p._Message) -> None:
            if isinstance(message, p.Answer) and not self.tampered:
                self.tampered = True
                # An address where aiortc expects a port: its error quotes it.
                bad_port = re.sub(
                    r"(a=candidate:\S+ \d+ \S+ \d+ \S+ )\d+", r"\g<1>192.0.2.77", message.sdp
                )
                bad_mid = message.sdp.replace("a=mid:0\r\n", "a=mid:0\x1b[2J\n\r\n", 1)
                for sdp in (bad_port, bad_mid):
                    await super().send(p.Answer(type="answer", sdp=sdp))
            await super().send(message)

    caplog.set_level(logging.INFO, logger="media.session")
    publisher = harness.bot(harness.token(consultation, Role.doctor), video=video_clip)
    await publisher.connect()
    bot = TwoBadAnswersFirst(harness.base_url, harness.token(consultation, Role.expert))
    harness.bots.append(bot)
    await bot.connect()
    assert await bot.wait_for(lambda: bot.frames_from(publisher.participant_id, "video") > 10, 10)
    assert [e.code for e in bot.errors] == ["bad_sdp", "bad_sdp"]
    refused = [r.getMessage() for r in caplog.records if "answer refused" in r.getMessage()]
    assert len(refused) == 2, refused
    assert all(bot.participant_id in line for line in refused)
    assert "ValueError" in refused[0] and "mid" in refused[1]
    for line in refused:
        assert "192.0.2.77" not in line and "a=" not in line and "v=0" not in line
        assert line.isprintable(), line


async def test_observer_receives_everything_and_cannot_publish(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    doctor = harness.bot(
        harness.token(consultation, Role.doctor), video=video_clip, audio=audio_clip
    )
    patient = harness.bot(
        harness.token(consultation, Role.patient), video=video_clip, audio=audio_clip
    )
    # An observer that tries to publish anyway.
    observer = harness.bot(
        harness.token(consultation, Role.observer), video=video_clip, audio=audio_clip
    )
    for bot in (doctor, patient, observer):
        await bot.connect()
    assert await observer.wait_for(
        lambda: all(
            observer.frames_from(x.participant_id, kind) > 20
            for x in (doctor, patient)
            for kind in ("video", "audio")
        ),
        timeout=15,
    )
    assert [e.code for e in observer.errors] == ["forbidden"]
    session = harness.worker.session(consultation, observer.participant_id)
    assert session is not None and session.producers == {}
    assert doctor.frames_from(observer.participant_id, "video") == 0
    assert harness.worker.stats().producers == 4
    await observer.send(p.Mute(type="mute", kind="audio", muted=True))
    assert await observer.wait_for(lambda: len(observer.errors) == 2, 5)
    assert observer.errors[-1].code == "forbidden"


async def test_flood_is_rate_limited_not_fatal(harness: Harness, consultation: str) -> None:
    bot = harness.bot(harness.token(consultation, Role.patient))
    await bot.connect()
    for i in range(300):
        await bot.send(p.Ping(type="ping", ts=float(i)))
    assert await bot.wait_for(lambda: any(e.code == "rate_limited" for e in bot.errors), 5)
    await asyncio.sleep(1.0)
    assert bot.bye is None, bot.bye
    await bot.send(p.Ping(type="ping", ts=-1.0))
    assert await bot.wait_for(
        lambda: any(isinstance(e, p.Pong) and e.ts == -1.0 for e in bot.events), 5
    )


def _negotiation_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("negotiate-")]


async def test_vanishing_mid_negotiation_leaves_nothing_behind(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    class NeverAnswers(Bot):
        async def _answer(self, offer: p.Offer) -> None:
            self.offers += 1

    stayer = harness.bot(
        harness.token(consultation, Role.doctor), video=video_clip, audio=audio_clip
    )
    await stayer.connect()
    ghost = NeverAnswers(
        harness.base_url, harness.token(consultation, Role.patient), video=video_clip
    )
    harness.bots.append(ghost)
    await ghost.connect()
    assert await ghost.wait_for(lambda: ghost.offers >= 1, 5)
    assert harness.worker.stats().sessions == 2
    await ghost.vanish()

    server = harness.server
    # The Room closes the media session, then leaves the store, then tells the others:
    # once the stayer hears of it, all three are done.
    assert await stayer.wait_for(
        lambda: any(
            isinstance(e, p.ParticipantLeft) and e.participantId == ghost.participant_id
            for e in stayer.events
        ),
        5,
    )
    assert harness.worker.stats() == WorkerStats(rooms=1, sessions=1, producers=2, consumers=0)
    assert [x.id for x in await server.store.participants(consultation)] == [stayer.participant_id]
    assert harness.room(consultation).members.keys() == {stayer.participant_id}  # type: ignore[union-attr]
    assert [t.get_name() for t in _negotiation_tasks()] == [f"negotiate-{stayer.participant_id}"]

    await stayer.close()
    assert await stayer.wait_for(lambda: harness.worker.stats().rooms == 0, 5)
    assert _negotiation_tasks() == []
    assert await server.store.participants(consultation) == []


async def test_a_client_that_never_answers_is_dropped(
    harness: Harness, consultation: str, video_clip: Clip
) -> None:
    class NeverAnswers(Bot):
        async def _answer(self, offer: p.Offer) -> None:
            self.offers += 1

    mute = NeverAnswers(
        harness.base_url, harness.token(consultation, Role.patient), video=video_clip
    )
    harness.bots.append(mute)
    await mute.connect()
    # The fixture's config gives 5 s to answer.
    assert await mute.wait_for(lambda: mute.bye is not None, 10)
    assert "answer" in mute.bye.reason
    assert await mute.wait_for(lambda: harness.worker.stats().sessions == 0, 5)


async def test_observer_alone_gets_no_empty_offer_then_receives(
    harness: Harness, consultation: str, video_clip: Clip
) -> None:
    observer = harness.bot(harness.token(consultation, Role.observer))
    await observer.connect()
    await asyncio.sleep(0.5)
    assert observer.offers == 0 and observer.errors == []
    doctor = harness.bot(harness.token(consultation, Role.doctor), video=video_clip)
    await doctor.connect()
    assert await observer.wait_for(
        lambda: observer.frames_from(doctor.participant_id, "video") > 10, 10
    )


async def test_everyone_leaving_at_once_cleans_up(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> None:
    bots = [
        harness.bot(harness.token(consultation, role), video=video_clip, audio=audio_clip)
        for role in (Role.doctor, Role.expert, Role.patient)
    ]
    await asyncio.gather(*(b.connect() for b in bots))
    assert await bots[0].wait_for(
        lambda: bots[0].frames_from(bots[1].participant_id, "video") > 5, 10
    )
    await asyncio.gather(*(b.vanish() for b in bots))
    worker = harness.worker
    assert await bots[0].wait_for(lambda: worker.rooms == {} and len(harness.server.rooms) == 0, 10)
    assert _negotiation_tasks() == []


async def test_same_identity_reconnecting_replaces_the_old_session(
    harness: Harness, consultation: str, video_clip: Clip
) -> None:
    from signaling.tokens import mint

    def token() -> str:
        return mint(harness.config.secret, consultation_id=consultation, kind="joint",
                    identity="nurse-7", name="N", role=Role.patient,
                    waiting_room=False)  # fmt: skip

    doctor = harness.bot(harness.token(consultation, Role.doctor), video=video_clip)
    first = harness.bot(token(), video=video_clip)
    await doctor.connect()
    await first.connect()
    second = harness.bot(token(), video=video_clip)
    await second.connect()
    assert await first.wait_for(lambda: first.bye is not None, 5)
    assert "replaced" in first.bye.reason
    server = harness.server
    present = [x.id for x in await server.store.participants(consultation)]
    assert present == [doctor.participant_id, second.participant_id]
    assert await doctor.wait_for(
        lambda: (
            doctor.frames_from(second.participant_id, "video") > 10
            and harness.worker.stats().sessions == 2
        ),
        10,
    )
