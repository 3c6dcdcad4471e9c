"""One participant's worst signaling within its token's rights is cut quickly and costs the
others nothing: a client that never reads, a flood, oversized frames, a byte flood."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from media.clips import Clip
from rooms.roles import Role
from signaling.bot import Bot
from signaling.room import connection as ws_module
from tests.integration.conftest import Harness


@pytest.fixture
async def call(
    harness: Harness, consultation: str, video_clip: Clip
) -> AsyncIterator[tuple[Bot, Bot]]:
    """An honest doctor publishing and an honest expert watching."""
    doctor = harness.bot(harness.token(consultation, Role.doctor), video=video_clip)
    expert = harness.bot(harness.token(consultation, Role.expert))
    await doctor.connect()
    await expert.connect()
    assert await expert.wait_for(
        lambda: expert.frames_from(doctor.participant_id, "video") > 10, 10
    )
    yield doctor, expert


async def _raw_join(
    harness: Harness, http: aiohttp.ClientSession, token: str
) -> aiohttp.ClientWebSocketResponse:
    """A joined socket driven by hand: autoping off, so it answers nothing unless told."""
    ws = await http.ws_connect(
        harness.base_url + "/ws", autoping=False, heartbeat=None, max_msg_size=0
    )
    await ws.send_str(json.dumps({"type": "join", "token": token, "publish": []}))
    msg = await ws.receive(timeout=5)
    assert json.loads(msg.data)["type"] == "joined"
    return ws


async def _still_flowing(doctor: Bot, expert: Bot, frames: int = 30) -> bool:
    before = expert.frames_from(doctor.participant_id, "video")
    return await expert.wait_for(
        lambda: expert.frames_from(doctor.participant_id, "video") > before + frames, 5
    )


async def _participants(harness: Harness, consultation: str) -> int:
    return len(await harness.server.store.participants(consultation))


async def test_a_client_that_sends_but_never_reads_is_cut(
    harness: Harness,
    consultation: str,
    call: tuple[Bot, Bot],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same mechanism on a shorter clock (5 s / 15 s in production).
    monkeypatch.setattr(ws_module, "HEARTBEAT_S", 0.5)
    monkeypatch.setattr(ws_module, "PONG_DEADLINE_S", 2.0)
    async with aiohttp.ClientSession() as http:
        ws = await _raw_join(harness, http, harness.token(consultation, Role.observer))
        assert await _participants(harness, consultation) == 3
        started = time.monotonic()
        # Keep sending well within the message rate, and never read (no pong either): before
        # the fix the incoming data kept aiohttp's heartbeat from ever pinging.
        with pytest.raises((ConnectionError, aiohttp.ClientError)):
            for i in range(400):  # 20 s at most
                await ws.send_str(json.dumps({"type": "ping", "ts": i}))
                await asyncio.sleep(0.05)
                if await _participants(harness, consultation) == 2:
                    raise ConnectionError("the server let go")
        assert time.monotonic() - started < 6.0
    doctor, expert = call
    assert await _still_flowing(doctor, expert)
    assert harness.worker.stats().sessions == 2


async def test_a_flood_is_cut_within_a_second(
    harness: Harness, consultation: str, call: tuple[Bot, Bot]
) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await _raw_join(harness, http, harness.token(consultation, Role.patient))
        frame = json.dumps({"type": "ping", "ts": 1.0})
        started = time.monotonic()
        sent = 0
        with pytest.raises((ConnectionError, aiohttp.ClientError)):
            while time.monotonic() - started < 10:
                await ws.send_str(frame)
                sent += 1
                if sent % 200 == 0:
                    await asyncio.sleep(0.01)  # ~5,000 messages/s, and lets the server run
                if ws.closed or ws._reader.exception() is not None:  # type: ignore[attr-defined]
                    raise ConnectionError("closed")
                if await _participants(harness, consultation) == 2:
                    raise ConnectionError("the server let go")
        # Before the fix, strikes were forgiven with every refilled token: never cut.
        assert time.monotonic() - started < 2.0, sent
    doctor, expert = call
    assert await _still_flowing(doctor, expert)


async def test_megabyte_frames_are_cut_at_the_frame_and_a_byte_flood_at_the_budget(
    harness: Harness, consultation: str, call: tuple[Bot, Bot]
) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await _raw_join(harness, http, harness.token(consultation, Role.patient))
        await ws.send_str(json.dumps({"type": "ping", "ts": 1, "x": "y" * (1 << 20)}))
        msg = await ws.receive(timeout=5)
        while msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.PING):
            msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG

        # Frames just under the protocol's limit, within the message rate: the bytes add up.
        ws = await _raw_join(harness, http, harness.token(consultation, Role.patient))
        big = json.dumps({"type": "ping", "ts": 1.0, "pad": "z" * (60 * 1024)})
        started = time.monotonic()
        with pytest.raises((ConnectionError, aiohttp.ClientError)):
            for _ in range(200):
                await ws.send_str(big)
                await asyncio.sleep(0.03)
                if await _participants(harness, consultation) == 2:
                    raise ConnectionError("the server let go")
        assert time.monotonic() - started < 3.0
    doctor, expert = call
    assert await _still_flowing(doctor, expert)


async def test_the_size_limit_counts_bytes_not_characters(
    harness: Harness, consultation: str
) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await _raw_join(harness, http, harness.token(consultation, Role.patient))
        # 30,000 characters, 120,000 bytes of UTF-8: under the old character count.
        await ws.send_str(json.dumps({"type": "answer", "sdp": "😀" * 30_000}, ensure_ascii=False))
        msg = await ws.receive(timeout=5)
        assert json.loads(msg.data)["code"] == "too_large"
        await ws.send_str(json.dumps({"type": "ping", "ts": 2.0}))
        msg = await ws.receive(timeout=5)
        assert json.loads(msg.data) == {"type": "pong", "ts": 2.0}


async def test_a_session_takes_a_bounded_number_of_candidates(
    harness: Harness, consultation: str, video_clip: Clip
) -> None:
    from media.session import MAX_REMOTE_CANDIDATES

    patient = harness.bot(harness.token(consultation, Role.patient), video=video_clip)
    await patient.connect()
    for i in range(MAX_REMOTE_CANDIDATES + 5):
        # Each a distinct host candidate on a loopback address (never leaves the machine).
        line = f"candidate:{i} 1 udp 2122260223 127.0.{i // 250}.{i % 250 + 1} {40000 + i} typ host"
        await patient.send_raw(json.dumps({"type": "candidate", "candidate": line, "sdpMid": "0"}))
        await asyncio.sleep(0.025)  # within the message rate
    assert await patient.wait_for(lambda: len(patient.errors) >= 5, 5)
    assert {e.code for e in patient.errors} == {"bad_candidate"}
    session = harness.worker.session(consultation, patient.participant_id)
    assert session is not None and session.remote_candidates == MAX_REMOTE_CANDIDATES
