"""The terminals' hub on one node: a ring reaches a terminal that reconnects while it rings,
a terminal holds a bounded number of streams, a full stream is cut, not grown."""

from __future__ import annotations

import contextlib

from signaling.terminal.hub import MAX_STREAMS, QUEUE_SIZE, TerminalHub


async def test_a_ring_reaches_a_terminal_that_reconnects_while_it_rings() -> None:
    hub = TerminalHub()
    assert hub.ring("term_1", "call_1", {"type": "ring", "call": "call_1"}) == 0
    assert hub.ringing("term_1", "call_1")
    async with hub.connect("term_1") as queue:
        assert hub.online("term_1")
        assert queue.get_nowait() == {"type": "ring", "call": "call_1"}
    assert not hub.online("term_1")
    hub.stop_ringing("term_1", "call_1")
    async with hub.connect("term_1") as queue:
        assert queue.empty()


async def test_streams_are_bounded_and_a_full_one_is_cut() -> None:
    hub = TerminalHub()
    async with contextlib.AsyncExitStack() as stack:
        queues = [await stack.enter_async_context(hub.connect("term_1")) for _ in range(4)]
        # The oldest was told to end (None) when the fourth came; the others hold on.
        assert all(q.empty() for q in queues[1:]) and len(queues[1:]) == MAX_STREAMS
        assert queues[0].get_nowait() is None
        for _ in range(QUEUE_SIZE + 1):
            hub.send("term_1", {"type": "settings"})
        # A reader that fell behind: its queue ends with None, and never grew past its size.
        last = queues[-1]
        assert last.qsize() <= QUEUE_SIZE
        items = [last.get_nowait() for _ in range(last.qsize())]
        assert None in items
    hub.disconnect("term_1", {"type": "revoked"})
    assert not hub.online("term_1")
