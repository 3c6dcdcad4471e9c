"""Fan-out without a network: keyframe gating, slow subscribers, PLI rate limiting."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from media.clips import vp8_clip
from media.consumer import QUEUE_FRAMES, Consumer, OutboundSlot
from media.producer import Producer

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


class Receiver:
    """Stands in for an RTCRtpReceiver: only the PLI path is exercised here."""

    def getSynchronizationSources(self) -> list:
        return []


def _producer(interval: float = 0.3) -> Producer:
    receiver: Any = Receiver()
    return Producer(
        "P1-v1", "P1", "video", receiver, mime_type="video/VP8", keyframe_interval_s=interval
    )


def _slot() -> OutboundSlot:
    slot = OutboundSlot("video")
    slot.active = True
    return slot


async def test_new_consumer_waits_for_a_keyframe_and_asks_for_one() -> None:
    clip = vp8_clip()
    producer = _producer()
    consumer = Consumer(producer, _slot(), "P2")
    assert producer.keyframe_requests_sent == 1
    for i in range(1, 5):  # deltas only
        producer.on_frame(VP8, JitterFrame(clip.frames[i], i * 3000), False)
    assert consumer.frames_sent == 0 and consumer.frames_dropped == 4
    key = clip.keyframe_indices[1]
    producer.on_frame(VP8, JitterFrame(clip.frames[key], 5 * 3000), False)
    producer.on_frame(VP8, JitterFrame(clip.frames[key + 1], 6 * 3000), False)
    assert consumer.frames_sent == 2
    first = await consumer.slot.recv()
    assert bytes(first) == clip.frames[key]


async def test_a_slow_subscriber_resyncs_alone() -> None:
    clip = vp8_clip()
    producer = _producer(interval=0.0)
    slow, fast = Consumer(producer, _slot(), "slow"), Consumer(producer, _slot(), "fast")
    producer.on_frame(VP8, JitterFrame(clip.frames[0], 0), False)
    delivered = 1
    for i in range(1, QUEUE_FRAMES["video"] + 5):
        producer.on_frame(VP8, JitterFrame(clip.frames[i], i * 3000), False)
        await fast.slot.recv()  # the fast one keeps up; the slow one never reads
        delivered += 1
    assert fast.frames_sent == delivered and not fast.waiting_for_keyframe
    assert slow.waiting_for_keyframe and slow.frames_dropped > 0
    assert len(slow.slot._frames) == 0
    await asyncio.sleep(0)
    assert producer.keyframe_requests_sent >= 3  # two Consumers joining, one resync


async def test_inactive_slot_drops_everything() -> None:
    clip = vp8_clip()
    producer = _producer()
    slot = OutboundSlot("video")
    consumer = Consumer(producer, slot, "P2")
    producer.on_frame(VP8, JitterFrame(clip.frames[0], 0), False)
    assert consumer.frames_sent == 0 and len(slot._frames) == 0


async def test_keyframe_requests_are_rate_limited_but_never_lost() -> None:
    producer = _producer(interval=0.2)
    producer.request_keyframe()
    producer.request_keyframe()
    producer.request_keyframe()
    assert producer.keyframe_requests_sent == 1
    await asyncio.sleep(0.3)
    # The requests inside the interval became exactly one more, at its end.
    assert producer.keyframe_requests_sent == 2
    producer.close()


async def test_loss_upstream_resyncs_every_consumer() -> None:
    clip = vp8_clip()
    producer = _producer(interval=0.0)
    consumer = Consumer(producer, _slot(), "P2")
    producer.on_frame(VP8, JitterFrame(clip.frames[0], 0), False)
    producer.on_frame(VP8, JitterFrame(clip.frames[2], 6000), True)  # frame 1 was lost
    assert consumer.waiting_for_keyframe and consumer.frames_sent == 1


async def test_a_waiting_consumer_asks_again_if_no_keyframe_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import media.consumer

    monkeypatch.setattr(media.consumer, "KEYFRAME_RETRY_S", 0.05)
    clip = vp8_clip()
    producer = _producer(interval=0.0)
    Consumer(producer, _slot(), "P2")
    asked = producer.keyframe_requests_sent
    for i in range(1, 4):  # the answer to the first request never comes
        await asyncio.sleep(0.06)
        producer.on_frame(VP8, JitterFrame(clip.frames[i], i * 3000), False)
    await asyncio.sleep(0)
    assert producer.keyframe_requests_sent == asked + 3
