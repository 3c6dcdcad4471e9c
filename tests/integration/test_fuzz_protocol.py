"""Hypothesis fuzzes the signaling protocol in each of its states while a call goes on.

A few hundred examples in all (``make fuzz`` runs >= 100,000 against a server process).
Each example is a batch of frames (tests/fuzz/strategies.py) sent by a lane in its state
(tests/fuzz/lanes.py), which then checks that every reply is a valid server message and
that the socket still answers in order, or was closed as the protocol says. Hypothesis
runs in a worker thread and hands each example to the event loop that runs the server, so
a failing example shrinks against the live server to the frames that matter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings

from media.clips import Clip
from rooms.consultation import new_consultation_id
from rooms.roles import Role
from tests.fuzz.call import ProtectedCall
from tests.fuzz.lanes import (
    Arena,
    BeforeJoinLane,
    JoinedLane,
    Lane,
    MidNegotiationLane,
    RecordingLane,
)
from tests.fuzz.strategies import STATES, Frame, State, Wire, batches
from tests.integration.conftest import Harness

EXAMPLES_PER_STATE = 60
EXAMPLE_TIMEOUT_S = 120.0


@pytest.fixture
async def arena(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> AsyncIterator[tuple[Arena, ProtectedCall]]:
    call = ProtectedCall(
        harness.bot(harness.token(consultation, Role.expert), video=video_clip, audio=audio_clip),
        harness.bot(harness.token(consultation, Role.patient), video=video_clip, audio=audio_clip),
    )
    await call.start()
    arena = Arena(harness.base_url, harness.config.secret, consultation, protected=call.ids)
    await arena.prepare()
    try:
        yield arena, call
    finally:
        await arena.close()


def lane_for(state: State, arena: Arena, answer_timeout_s: float) -> Lane:
    if state == "before_join":
        return BeforeJoinLane(arena, arena.call)
    if state == "joined":
        return JoinedLane(arena, arena.call, role=Role.nurse)
    if state == "mid_negotiation":
        return MidNegotiationLane(
            arena, arena.call, role=Role.observer, answer_timeout_s=answer_timeout_s
        )
    # The host of the protected call: it may do anything but end it for everyone.
    return RecordingLane(arena, arena.call, state, exclude={"end", "media_restart"})


# The event loop's thread (aioice) uses the random module while Hypothesis draws.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@pytest.mark.parametrize("state", STATES)
async def test_fuzzed_frames_in_each_state_get_valid_replies_and_the_call_goes_on(
    harness: Harness, arena: tuple[Arena, ProtectedCall], state: State
) -> None:
    arena_, call = arena
    lane = lane_for(state, arena_, harness.config.media.answer_timeout_s)
    loop = asyncio.get_running_loop()
    tally = arena_.tally

    @settings(
        max_examples=EXAMPLES_PER_STATE,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batch=batches(state, lane.exclude))
    def each_batch(batch: list[Frame]) -> None:
        before = len(tally.findings)
        future = asyncio.run_coroutine_threadsafe(lane.run_batch(batch), loop)
        future.result(timeout=EXAMPLE_TIMEOUT_S)
        assert tally.findings[before:] == []
        assert call.ended() is None, call.ended()

    try:
        await asyncio.to_thread(each_batch)
    finally:
        await lane.close()
    sent = {label: n for (s, label), n in tally.sent.items() if s == state}
    print(f"{state}: sent {sent}; errors {dict(tally.errors)}; closes {dict(tally.closes)}")
    assert sum(sent.values()) >= EXAMPLES_PER_STATE, sent
    assert await call.flowing(), call.video()
    assert harness.worker.stats().sessions >= 2
    # Every state reaches the handlers it is about, not only the parser.
    assert len(sent) >= 8, sent


async def test_the_arena_refuses_what_it_should(arena: tuple[Arena, ProtectedCall]) -> None:
    """The join tokens the fuzzer's ``Ref``s stand for are refused for the right reasons."""
    arena_, _ = arena
    from tests.fuzz.lanes import FuzzSocket

    expected = {
        "expired": "expired_token",
        "foreign": "invalid_token",
        "tampered": "invalid_token",
        "truncated": "invalid_token",
        "full": "consultation_full",
        "ended": "revoked_token",
    }
    for kind, code in expected.items():
        sock = FuzzSocket(arena_, "before_join")
        await sock.open()
        await sock.send_message({"type": "join", "token": arena_.token_of_kind(kind)})
        async with asyncio.timeout(10):
            await sock.closed.wait()
        assert [e.code for e in sock.errors] == [code], kind
        await sock.close()
    sock = FuzzSocket(arena_, "before_join")
    assert await sock.join(arena_.token_of_kind("valid"), [])
    await sock.close()
    assert new_consultation_id() != arena_.lobby


# ------------------------------------------------------------------ what the fuzzer found


async def test_a_refused_join_closes_with_a_valid_utf8_reason(harness: Harness) -> None:
    """The close frame's reason is the error message cut to fit a close frame: cut in the
    middle of a character it was not UTF-8, and a client failed the whole close (1007)
    instead of seeing the refusal's code."""
    from tests.fuzz.lanes import CLOSE_POLICY, FuzzSocket

    arena = Arena(harness.base_url, harness.config.secret, new_consultation_id())
    for first in ({"type": "é" * 100}, {"type": "xé" * 60}, {"type": "日本" * 40}):
        sock = FuzzSocket(arena, "before_join")
        await sock.open()
        await sock.send_message(first)
        async with asyncio.timeout(10):
            await sock.closed.wait()
        await sock.close()
        assert len(sock.errors) == 1 and sock.errors[0].ref in ("join", None), sock.errors
        assert sock.close_code == CLOSE_POLICY, (first, sock.close_code)


async def test_frames_before_the_join_do_not_extend_its_deadline(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The join deadline counted from each frame: a socket sending a binary frame (or a
    WebSocket ping) now and then stayed unjoined for ever, holding one of its address's
    unauthenticated connections (signaling/http/guard.py)."""
    from signaling.room import connection as ws_module
    from tests.fuzz.lanes import CLOSE_POLICY, FuzzSocket

    monkeypatch.setattr(ws_module, "JOIN_TIMEOUT_S", 1.0)
    sock = FuzzSocket(Arena(harness.base_url, harness.config.secret, "x" * 8), "before_join")
    await sock.open()
    started = asyncio.get_running_loop().time()
    for _ in range(40):  # 10 s at most
        if not await sock.send_wire(Wire(False, b"\x00")):
            break
        await sock.wait_until(lambda: False, 0.25)
    elapsed = asyncio.get_running_loop().time() - started
    await sock.close()
    assert sock.close_code == CLOSE_POLICY and elapsed < 3.0, (sock.close_code, elapsed)
    assert [e.code for e in sock.errors][-1] == "not_joined"
