"""The pieces behind /metrics and the call quality report, without a call: histograms of
plain numbers, the Worker's loop-lag timer, the bus's reading of a Worker's numbers, and the
consultation page's summary and SVG chart."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime, timedelta

import pytest

from media.bus import _quality_sample, _worker_metrics
from media.client import Flow, QualitySample, WorkerMetrics
from media.loop_lag import LoopLag
from media.meter import LOOP_LAG_BOUNDS, Buckets
from rooms.records.quality import QualityRow
from signaling.console import call_quality
from signaling.console.call_quality import MAX_POINTS


def test_buckets_are_cumulative_like_prometheus() -> None:
    buckets = Buckets((0.1, 0.5, 1.0))
    for value in (0.05, 0.1, 0.3, 0.7, 5.0):
        buckets.observe(value)
    h = buckets.snapshot()
    assert h.counts == (2, 3, 4) and h.count == 5
    assert h.sum == pytest.approx(6.15)


async def test_loop_lag_sees_a_blocked_loop() -> None:
    lag = LoopLag(interval_s=0.05)
    lag.start()
    lag.start()  # idempotent
    try:
        await asyncio.sleep(0.12)
        # A slow callback: every call on the Worker waits behind it.
        asyncio.get_running_loop().call_soon(time.sleep, 0.2)
        await asyncio.sleep(0.35)
    finally:
        lag.stop()
    h = lag.snapshot()
    assert h.bounds == LOOP_LAG_BOUNDS and h.count >= 3
    under_100ms = h.counts[LOOP_LAG_BOUNDS.index(0.1)]
    assert under_100ms < h.count, "the blocked timer fired over 100 ms late"
    assert not lag.running


def test_a_workers_numbers_cross_the_bus_as_they_were() -> None:
    metrics = WorkerMetrics(
        worker="worker-1-abc",
        rooms=1,
        sessions=2,
        producers={"audio": 1, "video": 1},
        consumers={"audio": 1, "video": 1},
        flows=(Flow("inbound", "video", packets=10, bytes=9000, packets_lost=1, plis=2),),
        round_trip=Buckets((0.1,)).snapshot(),
        loop_lag=None,
        recordings=1,
        recording_bytes=5,
        recording_dropped_frames=0,
        recording_failures={"disk_full": 0},
    )
    assert _worker_metrics(dataclasses.asdict(metrics)) == metrics
    bad = dataclasses.asdict(metrics)
    bad["flows"][0]["direction"] = "sideways"
    with pytest.raises(ValueError):
        _worker_metrics(bad)
    sample = QualitySample("Pabc", at=1.0, interval_s=5.0, loss_in=0.01, fps_out=None)
    assert _quality_sample(dataclasses.asdict(sample)) == sample
    with pytest.raises(ValueError):
        _quality_sample({**dataclasses.asdict(sample), "rtt_ms": "fast"})


def _rows(pid: str, role: str, n: int, **values: float | None) -> list[QualityRow]:
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    return [
        QualityRow(pid, role, start + timedelta(seconds=5 * (i + 1)), 5.0, **values)  # type: ignore[arg-type]
        for i in range(n)
    ]


def test_the_report_summarises_and_draws_each_participant() -> None:
    doctor = _rows("P0123456789ab", "doctor", 12, loss_in=0.0, loss_out=0.02, rtt_ms=40.0,
                   fps_in=30.0, fps_out=25.0, kbps_in=800.0, kbps_out=700.0)  # fmt: skip
    observer = _rows("Pfedcba987654", "observer", 3, loss_out=0.5, fps_out=10.0, kbps_out=90.0)
    report = call_quality.report([*doctor, *observer])
    assert [(p.role, p.id) for p in report] == [("doctor", "P012345"), ("observer", "Pfedcba")]
    d, o = report
    assert d.duration == "1:00" and d.samples == 12
    assert (d.loss_in, d.loss_out, d.rtt_ms, d.fps_in, d.fps_out) == (
        "0.0 %",
        "2.0 %",
        "40",
        "30",
        "25",
    )
    assert (d.kbps_in, d.kbps_out) == ("800", "700")
    # An observer sends nothing: nothing measured is a dash and no line, never a zero.
    assert (o.fps_in, o.loss_in, o.rtt_ms) == ("–", "–", "–")
    sent_fps, received_fps = o.fps.lines
    assert sent_fps.segments == () and len(received_fps.segments) == 1
    # Loss of 50 % raises the loss axis; the line stays inside its panel.
    assert o.loss.ceiling == "50.0 %"
    for x, y in (map(float, p.split(",")) for p in received_fps.segments[0].split()):
        assert call_quality.LEFT <= x <= call_quality.RIGHT
        assert o.fps.top <= y <= o.fps.bottom


def test_a_long_call_is_averaged_and_a_gap_breaks_the_line() -> None:
    rows = _rows("P0123456789ab", "patient", 1000, fps_in=20.0)
    rows[400:450] = [dataclasses.replace(r, fps_in=None) for r in rows[400:450]]
    (p,) = call_quality.report(rows)
    sent = p.fps.lines[0]
    assert len(sent.segments) == 2
    assert sum(len(s.split()) for s in sent.segments) <= MAX_POINTS
    assert p.duration == "83:20"


def test_a_single_sample_still_shows_as_a_dot() -> None:
    (p,) = call_quality.report(_rows("P0123456789ab", "expert", 1, fps_in=15.0))
    (segment,) = p.fps.lines[0].segments
    first, second = segment.split()
    assert first == second
