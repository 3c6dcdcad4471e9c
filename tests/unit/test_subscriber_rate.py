"""Per-subscriber rate: the loss-based estimator, keyframe requests judged per subscriber,
and a struggling subscriber lowered alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

import media.keyframes as keyframes
from media.clips import vp8_clip
from media.consumer import Consumer, OutboundSlot
from media.jitter import LayeredFrame
from media.keyframes import RepairJudge, Verdict
from media.producer import Producer
from media.rate import FLOOR_BPS, LayerRates, LinkReport, LossBasedEstimator
from media.vp8 import FrameLayer

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


# ------------------------------------------------------------------ the estimator


def test_estimator_holds_cuts_and_probes_as_gcc_says() -> None:
    e = LossBasedEstimator(1_000_000)
    assert e.bps == 1_000_000  # starts at the ceiling: a healthy link is never started low
    e.update(LinkReport(fraction_lost=0.0), now=0.0)
    assert e.bps == 1_000_000  # and never goes above it
    e.update(LinkReport(fraction_lost=0.05), now=1.0)
    assert e.bps == 1_000_000  # 2-10 %: hold
    e.update(LinkReport(fraction_lost=0.20), now=2.0)
    assert e.bps == 900_000  # > 10 %: A * (1 - 0.5 * 0.2)
    e.update(LinkReport(fraction_lost=0.20), now=2.1)
    assert e.bps == 900_000  # one cut per 300 ms + RTT: the next report is the same loss
    e.update(LinkReport(fraction_lost=0.01), now=3.0)
    assert e.bps == 945_000  # < 2 %: +5 %
    e.update(LinkReport(fraction_lost=0.01), now=3.5)
    assert e.bps == 945_000  # one increase a second
    for i in range(30):
        e.update(LinkReport(fraction_lost=1.0), now=4.0 + i)
    assert e.bps == FLOOR_BPS  # never below the floor
    e.update(LinkReport(remb_bps=10, round_trip_s=0.08))
    assert e.remb == FLOOR_BPS and e.round_trip_s == 0.08


def test_estimator_after_a_loss_step_recovers_at_five_percent_a_report() -> None:
    e = LossBasedEstimator(2_000_000)
    for i in range(5):
        e.update(LinkReport(fraction_lost=0.3), now=float(i))  # 300 kbps link under 2 Mbps
    low = e.bps
    assert low < 2_000_000 * 0.85**5 + 1
    steps = 0
    while e.bps < 2_000_000:
        e.update(LinkReport(fraction_lost=0.0), now=10.0 + steps)
        steps += 1
    assert 10 < steps < 40


def test_layer_rates_measure_each_layer() -> None:
    rates = LayerRates(window_s=1.0)
    assert rates.cumulative_bps() == []
    t = 0.0
    for i in range(61):  # 2 s at 30 fps, 0-2-1-2
        tid = (0, 2, 1, 2)[i % 4]
        rates.add(tid, {0: 4000, 1: 2000, 2: 1000}[tid], t)
        t += 1 / 30
    r = rates.cumulative_bps()
    assert len(r) == 3 and r[0] < r[1] < r[2]
    assert r[0] == pytest.approx(7.5 * 4000 * 8, rel=0.1)
    assert r[2] == pytest.approx(7.5 * (4000 + 2000) * 8 + 15 * 1000 * 8, rel=0.1)


# ------------------------------------------------------------------ judging PLIs


def test_judge_forwards_one_then_ignores_then_calls_it_weak() -> None:
    j = RepairJudge()
    assert j.judge(0.0) is Verdict.FORWARD
    assert j.judge(1.0) is Verdict.IGNORE
    assert j.judge(2.0) is Verdict.WEAK  # three in ten seconds
    assert j.judge(3.0) is Verdict.IGNORE  # inside the per-subscriber interval still
    assert j.judge(20.0) is Verdict.FORWARD  # a rare request is honoured


class _Receiver:
    def getSynchronizationSources(self) -> list[Any]:
        return []


def _producer(interval: float = 0.3) -> Producer:
    receiver: Any = _Receiver()
    return Producer(
        "P1-v1", "P1", "video", receiver, mime_type="video/VP8", keyframe_interval_s=interval
    )


def _consumer(producer: Producer, name: str) -> Consumer:
    slot = OutboundSlot("video")
    slot.active = True
    consumer = Consumer(producer, slot, name)
    consumer.estimator = LossBasedEstimator(1_500_000)
    return consumer


def _feed(producer: Producer, consumers: list[Consumer], start: int, count: int) -> None:
    clip = vp8_clip()
    for i in range(start, start + count):
        index = i % len(clip.frames)
        producer.on_frame(VP8, JitterFrame(clip.frames[index], i * 3000), False)
        for c in consumers:
            c.slot.clear()  # the subscriber keeps up


async def test_repair_requests_from_many_subscribers_cost_one_keyframe_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(keyframes, "CONSUMER_REPAIR_INTERVAL_S", 0.0)
    monkeypatch.setattr(keyframes, "WEAK_REQUESTS", 1000)
    producer = _producer(interval=0.0)
    consumers = [_consumer(producer, f"S{i}") for i in range(5)]
    _feed(producer, consumers, 0, 2)  # a keyframe: nobody waits
    await asyncio.sleep(0)
    before = producer.keyframe_requests_sent
    for _ in range(20):  # every subscriber asks, over and over
        for c in consumers:
            c.keyframe_requested()
    assert producer.keyframe_requests_sent - before <= 1
    assert producer.repair_requests_sent <= 1
    producer.close()


async def test_a_start_request_is_not_held_up_by_a_pending_repair() -> None:
    producer = _producer(interval=0.05)
    producer.request_keyframe()
    producer.request_repair()  # deferred by REPAIR_INTERVAL_S
    producer.request_keyframe()  # a joiner: must not wait the repair interval
    await asyncio.sleep(0.1)
    assert producer.keyframe_requests_sent == 2
    producer.close()


async def test_a_subscriber_that_keeps_asking_is_moved_to_still_frames_alone() -> None:
    producer = _producer(interval=0.0)
    weak, healthy = _consumer(producer, "weak"), _consumer(producer, "healthy")
    modes: list[str] = []
    weak.on_rate_mode = lambda c, mode: modes.append(mode)
    _feed(producer, [weak, healthy], 0, 80)  # more than one measuring window
    await asyncio.sleep(0)
    asked = producer.keyframe_requests_sent
    for _ in range(keyframes.WEAK_REQUESTS):
        weak.keyframe_requested()
    assert weak.stills and modes == ["stills"]
    assert producer.repair_requests_sent <= 1  # only the first reached the Producer
    for _ in range(10):  # and on still frames, its requests reach nothing
        weak.keyframe_requested()
    sent_weak, sent_healthy = weak.frames_sent, healthy.frames_sent
    _feed(producer, [weak, healthy], 80, 60)
    assert healthy.frames_sent == sent_healthy + 60
    assert weak.frames_sent - sent_weak <= 1  # at most the clip's next keyframe
    await asyncio.sleep(0)
    # One still keyframe asked for (a repair), nothing else.
    assert producer.keyframe_requests_sent - asked <= 2
    assert weak.keyframe_requests_ignored >= 10


async def test_loss_reports_lower_the_layers_and_a_clean_link_restores_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import media.consumer

    monkeypatch.setattr(media.consumer, "UPGRADE_HOLD_S", 0.0)
    producer = _producer(interval=0.0)
    consumer = _consumer(producer, "S")
    consumer.estimator = LossBasedEstimator(2_000_000)
    clip = vp8_clip()
    modes: list[str] = []
    consumer.on_rate_mode = lambda c, mode: modes.append(mode)

    def feed(start: int, count: int) -> None:
        for i in range(start, start + count):
            layer = FrameLayer((0, 2, 1, 2)[i % 4], sync=i % 4 != 0)
            index = i % len(clip.frames)
            producer.on_frame(VP8, LayeredFrame(clip.frames[index], i * 3000, layer), False)
            consumer.slot.clear()

    feed(0, 70)
    rates = producer.layer_rates.cumulative_bps()
    assert len(rates) == 3
    clock = iter(range(10_000))
    # Loss until the estimate is between the base layer and two layers.
    while consumer.estimator.bps > rates[1]:
        consumer.link_report(LinkReport(fraction_lost=0.3), now=float(next(clock)))
    if consumer.estimator.bps >= rates[0]:
        assert modes[-1] == "reduced" and consumer.layers.target == 0
        dropped = consumer.frames_layer_dropped
        feed(70, 8)
        assert consumer.frames_layer_dropped == dropped + 6  # only TL0 goes through
    while consumer.estimator.bps >= rates[0] * 0.9:
        consumer.link_report(LinkReport(fraction_lost=0.5), now=float(next(clock)))
    assert consumer.stills and modes[-1] == "stills"
    for _ in range(80):
        consumer.link_report(LinkReport(fraction_lost=0.0), now=float(next(clock)))
    assert not consumer.stills and modes[-1] == "full"


def test_the_publisher_is_asked_for_what_its_best_subscriber_can_take() -> None:
    from media.rate import MIN_PUBLISHER_BPS, publisher_ceiling

    assert publisher_ceiling(1_500_000, [], False) == 1_500_000
    assert publisher_ceiling(1_500_000, [400_000, 900_000], False) == 900_000
    assert publisher_ceiling(1_500_000, [2_000_000], False) == 1_500_000
    assert publisher_ceiling(1_500_000, [40_000], False) == MIN_PUBLISHER_BPS
    assert publisher_ceiling(1_500_000, [400_000], True) == 1_500_000  # recording
