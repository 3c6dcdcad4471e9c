"""Participants leaving (or vanishing) right after their answer leave no stray task errors.

aiortc connects in a task nobody awaits; closing the connection while it runs made it fail
with "RTCIceTransport is closed", logged by asyncio as "Task exception was never retrieved"
(on the Worker and on bots alike). Leaving 0-0.3 s after answering hits that window often.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random

import pytest

from media.clips import Clip
from rooms.roles import Role
from signaling import protocol as p
from signaling.bot import Bot
from tests.integration.conftest import Harness

LEAVERS = 48
AT_ONCE = 6


class LeavesRightAfterAnswering(Bot):
    def __init__(self, *args: object, vanish: bool, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._vanish = vanish
        self.gone = asyncio.Event()
        self._leaving: asyncio.Task[None] | None = None

    async def _answer(self, offer: p.Offer) -> None:
        await super()._answer(offer)
        if self._leaving is None:
            # Not from the reader itself: closing cancels the reader.
            self._leaving = asyncio.create_task(self._leave())

    async def _leave(self) -> None:
        try:
            await asyncio.sleep(random.random() * 0.3)
            await (self.vanish() if self._vanish else self.close())
        finally:
            self.gone.set()


async def test_leaving_right_after_answering_leaves_no_unretrieved_task_exception(
    harness: Harness,
    consultation: str,
    video_clip: Clip,
    audio_clip: Clip,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    stayer = harness.bot(
        harness.token(consultation, Role.doctor), video=video_clip, audio=audio_clip
    )
    await stayer.connect()
    server = harness.server
    for start in range(0, LEAVERS, AT_ONCE):
        batch = [
            LeavesRightAfterAnswering(
                harness.base_url,
                harness.token(consultation, Role.expert),
                video=video_clip,
                audio=audio_clip,
                vanish=i % 2 == 1,
            )
            for i in range(start, start + AT_ONCE)
        ]
        harness.bots.extend(batch)
        await asyncio.gather(*(b.connect() for b in batch))
        async with asyncio.timeout(20):
            await asyncio.gather(*(b.gone.wait() for b in batch))
            # Their seats are free again once the store has them gone (the room holds 8).
            while len(await server.store.participants(consultation)) > 1:
                await asyncio.sleep(0.02)
    # "Task exception was never retrieved" is logged when the failed task is collected.
    await asyncio.sleep(0.5)
    gc.collect()
    await asyncio.sleep(0.1)
    stray = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert stray == [], stray[:3]
    assert await stayer.wait_for(lambda: harness.worker.stats().sessions == 1, 5)
