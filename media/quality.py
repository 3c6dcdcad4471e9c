"""Per-participant call quality, sampled by the Worker every few seconds: how much of what
they sent was lost on the way in, how much of what they were sent was lost on the way out,
the round trip, frame rates and bitrates. The node keeps the samples with the consultation
and the host sees them after the call (signaling/quality.py, the consultation's page).

A sample is the difference between two readings of the session's counters (media/meter.py),
so sampling costs a few additions per stream and nothing else on the forwarding loop.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from media.client import Direction, Kind, QualitySample
from media.meter import SessionReading, read

if TYPE_CHECKING:
    from media.consumer import Consumer
    from media.session import PeerSession

# Shorter intervals say little (a second of video is 30 frames, a few RTCP reports).
MIN_INTERVAL_S = 1.0


@dataclass
class _Snapshot:
    at: float  # monotonic
    reading: SessionReading
    frames_sent: dict[Consumer, int] = field(default_factory=dict)  # video Consumers


def _snapshot(session: PeerSession, now: float) -> _Snapshot:
    frames = {c: c.frames_sent for c in session.consumers.values() if c.producer.kind == "video"}
    return _Snapshot(now, read(session), frames)


def _share(part: int, whole: int) -> float | None:
    return min(1.0, max(0.0, part / whole)) if whole > 0 else None


class QualitySampler:
    """Remembers each session's last reading; ``sample`` gives what happened since."""

    def __init__(self) -> None:
        self._last: weakref.WeakKeyDictionary[PeerSession, _Snapshot] = weakref.WeakKeyDictionary()

    def sample(self, session: PeerSession, *, final: bool = False) -> QualitySample | None:
        """Since the last call for ``session`` (None the first time, or too soon after).
        ``final``: the session is closing; a shorter last interval still counts."""
        now = time.monotonic()
        current = _snapshot(session, now)
        last = self._last.get(session)
        if final:
            self._last.pop(session, None)
        else:
            self._last[session] = current
        if last is None:
            return None
        interval = now - last.at
        if interval < (MIN_INTERVAL_S / 2 if final else MIN_INTERVAL_S):
            if not final:
                self._last[session] = last  # keep measuring from the earlier reading
            return None
        return _difference(session.participant_id, last, current, interval)


def _difference(
    participant_id: str, last: _Snapshot, current: _Snapshot, interval: float
) -> QualitySample:
    before, after = last.reading, current.reading

    def delta(direction: Direction, name: str) -> int:
        kinds: tuple[Kind, ...] = ("audio", "video")
        return sum(
            getattr(after.flows[direction, k], name) - getattr(before.flows[direction, k], name)
            for k in kinds
        )

    lost_in = delta("inbound", "packets_lost")
    media_in = after.media_packets_in - before.media_packets_in
    lost_out = delta("outbound", "packets_lost")
    sent = delta("outbound", "packets")
    bytes_in = delta("inbound", "bytes")
    bytes_out = delta("outbound", "bytes")
    publishes_video = after.video_frames_in > 0
    video_out = current.frames_sent
    fps_out = None
    if video_out:
        frames = sum(n - last.frames_sent.get(c, 0) for c, n in video_out.items())
        fps_out = round(frames / interval / len(video_out), 2)
    rtts = after.round_trips
    return QualitySample(
        participant_id=participant_id,
        at=time.time(),
        interval_s=round(interval, 3),
        loss_in=_share(lost_in, media_in + lost_in),
        loss_out=_share(lost_out, sent),
        rtt_ms=round(1000 * sum(rtts) / len(rtts), 1) if rtts else None,
        fps_in=(
            round((after.video_frames_in - before.video_frames_in) / interval, 2)
            if publishes_video
            else None
        ),
        fps_out=fps_out,
        kbps_in=round(bytes_in * 8 / interval / 1000, 1),
        kbps_out=round(bytes_out * 8 / interval / 1000, 1),
    )
