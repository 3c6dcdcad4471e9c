"""``/metrics`` for Prometheus: this node's calls and every media Worker's numbers.

Series are named ``teleconsult_...`` (docs/metrics.md lists them). Labels are a Worker id,
a media kind, a direction, a call role or a reason: never a consultation, a participant, an
identity or a name (cardinality, and a scrape is not the place for who called whom). The
Workers' numbers come through the WorkerClient seam at scrape time (a Worker on the Redis
bus is another process, with no registry to share); this node's own are a join-time
histogram it observes and gauges read from its Rooms.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Histogram as PromHistogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from media.client import Histogram, WorkerClient, WorkerMetrics
from media.errors import MediaError
from rooms.roles import Role
from signaling.room.rooms import Rooms

log = logging.getLogger(__name__)

# Seconds from join to media: a second on a good link, several on a county one; past 10 a
# patient gives up.
JOIN_BOUNDS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0)


class JoinTimes:
    """How long joining takes, as the signaling side sees it: from ``join`` received (or the
    host admitting someone from the waiting room) to ``joined`` sent, plus from the
    participant's first offer to its answer. Time spent waiting for the host, or for
    somebody to publish, is not counted."""

    def __init__(self) -> None:
        self.histogram = PromHistogram(
            "teleconsult_join_seconds",
            "Join to joined, plus the first offer to its answer.",
            buckets=JOIN_BOUNDS,
            registry=None,
        )

    def observe(self, seconds: float) -> None:
        self.histogram.observe(seconds)


class NodeMetrics:
    def __init__(self, rooms: Rooms, worker: WorkerClient, join_times: JoinTimes) -> None:
        self.registry = CollectorRegistry()
        self._collector = _Collector(rooms)
        self._worker = worker
        self.registry.register(join_times.histogram)
        self.registry.register(self._collector)

    async def exposition(self) -> bytes:
        """The text format, with every Worker asked now. Workers that cannot be asked (Redis
        unreachable) are left out, and this node's own series still served."""
        try:
            self._collector.workers = await self._worker.metrics()
        except (MediaError, RedisError, OSError) as exc:
            log.warning("metrics: the media Workers cannot be asked: %s", exc)
            self._collector.workers = []
        # No await from here on: the Workers' numbers just set are the ones rendered.
        return generate_latest(self.registry)


class _Collector(Collector):
    def __init__(self, rooms: Rooms) -> None:
        self._rooms = rooms
        self.workers: list[WorkerMetrics] = []

    def collect(self) -> Iterator[Metric]:
        yield from self._calls()
        yield from self._media(self.workers)

    def _calls(self) -> Iterator[Metric]:
        in_call, waiting = 0, 0
        by_role = dict.fromkeys((r.value for r in Role), 0)
        for room in self._rooms:
            in_call += bool(room.members)
            waiting += len(room.waiting)
            for member in room.members.values():
                role = str(member.grant.role)
                by_role[role] = by_role.get(role, 0) + 1
        rooms = GaugeMetricFamily(
            "teleconsult_rooms", "Consultations with someone in the call on this node."
        )
        rooms.add_metric([], in_call)
        participants = GaugeMetricFamily(
            "teleconsult_participants",
            "Participants in a call on this node (admitted), by call role.",
            labels=["role"],
        )
        for role, n in sorted(by_role.items()):
            participants.add_metric([role], n)
        waiters = GaugeMetricFamily(
            "teleconsult_waiting_participants", "People in a waiting room on this node."
        )
        waiters.add_metric([], waiting)
        yield from (rooms, participants, waiters)

    def _media(self, workers: list[WorkerMetrics]) -> Iterator[Metric]:
        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels)

        def counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=labels)

        w_rooms = gauge("teleconsult_worker_rooms", "Media rooms on the Worker.", ["worker"])
        w_sessions = gauge(
            "teleconsult_worker_sessions", "Media sessions (peer connections).", ["worker"]
        )
        producers = gauge(
            "teleconsult_producers", "Incoming tracks (Producers).", ["worker", "kind"]
        )
        consumers = gauge(
            "teleconsult_consumers", "Outgoing copies of tracks (Consumers).", ["worker", "kind"]
        )
        flow_labels = ["worker", "direction", "kind"]
        media_bytes = counter(
            "teleconsult_media_bytes",
            "Media payload bytes: inbound from publishers, outbound to subscribers.",
            flow_labels,
        )
        packets = counter("teleconsult_media_packets", "RTP packets.", flow_labels)
        lost = counter(
            "teleconsult_media_packets_lost",
            "RTP packets lost: inbound on the way to the Worker, outbound as subscribers' "
            "receiver reports say.",
            flow_labels,
        )
        nacks = counter(
            "teleconsult_media_nacks",
            "NACKs: inbound sent by the Worker to publishers, outbound from subscribers.",
            flow_labels,
        )
        plis = counter(
            "teleconsult_media_plis",
            "Keyframe requests (PLI, FIR): inbound sent to publishers, outbound from subscribers.",
            flow_labels,
        )
        round_trip = HistogramMetricFamily(
            "teleconsult_media_round_trip_seconds",
            "Round trip from the Worker to each participant, every few seconds.",
            labels=["worker"],
        )
        loop_lag = HistogramMetricFamily(
            "teleconsult_worker_event_loop_lag_seconds",
            "How late a timer fires on the Worker's event loop.",
            labels=["worker"],
        )
        recordings = gauge("teleconsult_recordings", "Recordings running.", ["worker"])
        recording_bytes = counter(
            "teleconsult_recording_bytes",
            "Media bytes handed to recordings' writers (before container and encryption).",
            ["worker"],
        )
        dropped = counter(
            "teleconsult_recording_dropped_frames",
            "Frames a recording dropped because its disk was behind.",
            ["worker"],
        )
        failures = counter(
            "teleconsult_recording_failures",
            "Recordings that failed to start or stopped on an error.",
            ["worker", "reason"],
        )
        for m in workers:
            w = m.worker
            w_rooms.add_metric([w], m.rooms)
            w_sessions.add_metric([w], m.sessions)
            for kind, n in sorted(m.producers.items()):
                producers.add_metric([w, kind], n)
            for kind, n in sorted(m.consumers.items()):
                consumers.add_metric([w, kind], n)
            for f in m.flows:
                labels = [w, f.direction, f.kind]
                media_bytes.add_metric(labels, f.bytes)
                packets.add_metric(labels, f.packets)
                lost.add_metric(labels, f.packets_lost)
                nacks.add_metric(labels, f.nacks)
                plis.add_metric(labels, f.plis)
            _histogram(round_trip, [w], m.round_trip)
            _histogram(loop_lag, [w], m.loop_lag)
            recordings.add_metric([w], m.recordings)
            recording_bytes.add_metric([w], m.recording_bytes)
            dropped.add_metric([w], m.recording_dropped_frames)
            for reason, n in sorted(m.recording_failures.items()):
                failures.add_metric([w, reason], n)
        yield from (w_rooms, w_sessions, producers, consumers)
        yield from (media_bytes, packets, lost, nacks, plis, round_trip, loop_lag)
        yield from (recordings, recording_bytes, dropped, failures)


def _histogram(family: HistogramMetricFamily, labels: list[str], h: Histogram | None) -> None:
    if h is None:
        return
    buckets: list[tuple[str, float]] = [
        (_bound(b), c) for b, c in zip(h.bounds, h.counts, strict=True)
    ]
    buckets.append(("+Inf", h.count))
    family.add_metric(labels, buckets, sum_value=h.sum)


def _bound(value: float) -> str:
    # Prometheus's own spelling of a bucket bound (0.5, 1.0), so queries on le match.
    return repr(float(value))
