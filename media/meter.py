"""The Worker's meters: what each session's connection has carried, read from aiortc's
counters and the tap's, and the Worker's totals as counters that only grow.

Reading only adds up numbers kept by aiortc and the tap: no I/O, nothing awaited, so it
runs on the forwarding loop. Totals name no consultation or participant.
"""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from media.client import Direction, Flow, Histogram, Kind
from media.tap import count_feedback, inbound_packets, outbound_report, received

if TYPE_CHECKING:
    from media.session import PeerSession

FlowKey = tuple[Direction, Kind]
FLOW_KEYS: tuple[FlowKey, ...] = (
    ("inbound", "audio"),
    ("inbound", "video"),
    ("outbound", "audio"),
    ("outbound", "video"),
)
# Seconds. Round trips on a county link reach a few hundred ms; a loop late by 50 ms is
# already a visible stall for every call on the Worker.
ROUND_TRIP_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
LOOP_LAG_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Buckets:
    """A histogram of plain numbers (the Worker may be another process: no registry here)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._counts = [0] * len(bounds)  # per bucket, not cumulative
        self._count = 0
        self._sum = 0.0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self._counts):
            self._counts[index] += 1
        self._count += 1
        self._sum += value

    def snapshot(self) -> Histogram:
        cumulative, running = [], 0
        for n in self._counts:
            running += n
            cumulative.append(running)
        return Histogram(self.bounds, tuple(cumulative), self._count, self._sum)


@dataclass
class FlowCount:
    packets: int = 0
    bytes: int = 0
    packets_lost: int = 0
    nacks: int = 0
    plis: int = 0

    def add(self, other: FlowCount) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class SessionReading:
    """Everything one session's connection has carried so far (cumulative)."""

    flows: dict[FlowKey, FlowCount] = field(
        default_factory=lambda: {key: FlowCount() for key in FLOW_KEYS}
    )
    # Inbound packets on the media SSRCs (retransmissions not counted), for the loss share.
    media_packets_in: int = 0
    video_frames_in: int = 0
    # The round trip to the subscriber of each outbound stream that has had a report.
    round_trips: list[float] = field(default_factory=list)


def watch(session: PeerSession) -> None:
    """Count the subscriber's RTCP feedback from now on (idempotent; once the connection has
    a transport, i.e. after its first m-line)."""
    transceivers = session.transceivers
    if transceivers:
        count_feedback(transceivers[0].receiver.transport)


def read(session: PeerSession) -> SessionReading:
    reading = SessionReading()
    flows = reading.flows
    transceivers = session.transceivers
    for transceiver in transceivers:
        kind: Kind = "video" if transceiver.kind == "video" else "audio"
        counters = received(transceiver.receiver)
        if counters is not None:
            packets = inbound_packets(transceiver.receiver)
            flows["inbound", kind].add(
                FlowCount(
                    packets=packets.packets,
                    bytes=counters.bytes,
                    packets_lost=packets.lost,
                    nacks=counters.nacks,
                    plis=counters.plis,
                )
            )
            reading.media_packets_in += packets.media_packets
            if kind == "video":
                reading.video_frames_in += counters.frames
        report = outbound_report(transceiver.sender)
        if report.packets:
            flows["outbound", kind].add(
                FlowCount(
                    packets=report.packets,
                    bytes=report.bytes,
                    packets_lost=report.packets_lost or 0,
                )
            )
            if report.round_trip_s is not None:
                reading.round_trips.append(report.round_trip_s)
    if transceivers:
        # Installed by watch() at the first m-line; here too, should that have been missed.
        feedback = count_feedback(transceivers[0].receiver.transport)
        for kind_name, n in feedback.nacks.items():
            flows["outbound", "video" if kind_name == "video" else "audio"].nacks += n
        for kind_name, n in feedback.plis.items():
            flows["outbound", "video" if kind_name == "video" else "audio"].plis += n
    return reading


class Tally:
    """The Worker's totals: closed sessions summed as they close, live ones read now.

    Exported values never go down (Prometheus counters): a session between leaving its
    room and being summed, or a receiver report that lowers a loss count, cannot dip them.
    """

    def __init__(self) -> None:
        self._closed = {key: FlowCount() for key in FLOW_KEYS}
        self._summed: weakref.WeakSet[PeerSession] = weakref.WeakSet()
        self._exported: dict[tuple[FlowKey, str], int] = {}

    def close(self, session: PeerSession) -> None:
        """Add a closed session's final counts, once."""
        if session in self._summed:
            return
        self._summed.add(session)
        for key, count in read(session).flows.items():
            self._closed[key].add(count)

    def flows(self, live: Iterable[PeerSession]) -> tuple[Flow, ...]:
        totals = {key: FlowCount() for key in FLOW_KEYS}
        for key, count in self._closed.items():
            totals[key].add(count)
        for session in live:
            if session not in self._summed:
                for key, count in read(session).flows.items():
                    totals[key].add(count)
        result = []
        for (direction, kind), count in totals.items():
            values = {}
            for f in fields(count):
                mark = ((direction, kind), f.name)
                values[f.name] = self._exported[mark] = max(
                    self._exported.get(mark, 0), getattr(count, f.name)
                )
            result.append(Flow(direction, kind, **values))
        return tuple(result)
