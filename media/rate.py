"""What one subscriber's link can carry, estimated from what the subscriber tells us.

The estimator is GCC's loss-based controller (draft-ietf-rmcat-gcc-02, section 6), run
on the receiver reports a subscriber sends for one of its video m-lines:

- loss above 10 %: the rate was too high; cut it in proportion, ``A *= 1 - 0.5 * loss``;
- loss below 2 %: the link keeps up; probe upwards by 5 % per report (about one a second);
- in between: hold (2-10 % is what a wireless link loses without being overloaded).

aiortc negotiates ``goog-remb`` on its senders, so a subscriber also sends REMB from its
own receive-side estimator. It is recorded (stats) but does not cap the estimate, unlike
GCC's sender, which caps its loss-based rate by the delay-based one: a receive-side
estimate is bounded by about 1.5 times the rate it receives, so once a subscriber is
lowered its REMB falls with it and would hold it low for good; and aiortc's own receive
estimator (bots) reports well below what a loopback link carries (it held a 730 kbps
stream at 680 kbps and put a healthy subscriber on still frames).

The start and the ceiling are the most the Worker asks any publisher to send
(``--max-video-kbps``): a subscriber is assumed able to take the full stream until its
reports say otherwise, so a healthy one never starts low.
The floor keeps a cut from sinking below what audio-only recovery can probe up from.

Loss is the fraction of the last report interval (RFC 3550's ``fraction lost``, 1/256
units), before retransmission: what the link dropped, not what the decoder missed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

# GCC's thresholds and factors (draft-ietf-rmcat-gcc-02 section 6).
LOSS_HIGH = 0.10
LOSS_LOW = 0.02
INCREASE = 1.05
DECREASE_FACTOR = 0.5
# As libwebrtc's loss-based estimator: at most one increase a second, and one decrease per
# 300 ms plus a round trip (a cut needs that long to show in the next report). A browser
# puts a receiver report in every RTCP packet it sends, NACKs and PLIs included, so on a
# lossy link reports come many times a second, each about the same loss: applied each, they
# would compound one loss episode into a collapse.
INCREASE_INTERVAL_S = 1.0
DECREASE_INTERVAL_S = 0.3
# The least the estimate falls to: a still frame per few seconds and RTCP fit below it.
FLOOR_BPS = 30_000


@dataclass(frozen=True, slots=True)
class LinkReport:
    """One receiver report block about one sender, or one REMB."""

    fraction_lost: float | None = None  # 0..1, of the last interval
    jitter_s: float | None = None
    round_trip_s: float | None = None
    remb_bps: int | None = None


class LossBasedEstimator:
    def __init__(self, ceiling_bps: int, *, start_bps: int | None = None) -> None:
        self.ceiling = ceiling_bps
        self.estimate = float(start_bps if start_bps is not None else ceiling_bps)
        self.remb: int | None = None
        self.loss: float | None = None
        self.round_trip_s: float | None = None
        self.reports = 0
        self._decreased_at = -1e9
        self._increased_at = -1e9

    @property
    def bps(self) -> int:
        """The rate this subscriber may be sent."""
        return int(self.estimate)

    def update(self, report: LinkReport, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        if report.remb_bps is not None:
            self.remb = max(FLOOR_BPS, report.remb_bps)
        if report.round_trip_s is not None:
            self.round_trip_s = report.round_trip_s
        if report.fraction_lost is not None:
            self.reports += 1
            loss = min(1.0, max(0.0, report.fraction_lost))
            self.loss = loss
            rtt = self.round_trip_s or 0.0
            if loss > LOSS_HIGH:
                if now - self._decreased_at >= DECREASE_INTERVAL_S + rtt:
                    self.estimate *= 1 - DECREASE_FACTOR * loss
                    self._decreased_at = now
            elif loss < LOSS_LOW:
                if now - self._increased_at >= INCREASE_INTERVAL_S:
                    self.estimate *= INCREASE
                    self._increased_at = now
            self.estimate = max(FLOOR_BPS, min(self.ceiling, self.estimate))
        return self.bps

    def cap(self, bps: float) -> None:
        """Lower the estimate to at most ``bps`` (a subscriber's decoder gave up at more)."""
        self.estimate = max(FLOOR_BPS, min(self.estimate, bps))


class LayerRates:
    """A Producer's bitrate per temporal layer over the last ``window_s`` seconds.

    Counted as frames arrive (a few integer additions per frame), read when a Consumer's
    estimate changes (about once a second per subscriber).
    """

    def __init__(self, window_s: float = 2.0) -> None:
        self._window = window_s
        self._start: float | None = None
        self._bytes = [0, 0, 0, 0]
        self._previous: list[int] | None = None
        self._previous_span = window_s

    def add(self, tid: int, size: int, now: float) -> None:
        """``now``: the frame's time on the publisher's clock (seconds), so a burst of
        frames delayed on the way is not mistaken for a higher rate."""
        if self._start is None or now < self._start or now - self._start > 5 * self._window:
            # The first frame, or the publisher's clock jumped: start a new window.
            self._start = now
            self._bytes = [0, 0, 0, 0]
        elif now - self._start >= self._window:
            self._previous, self._previous_span = self._bytes, now - self._start
            self._bytes, self._start = [0, 0, 0, 0], now
        self._bytes[tid & 3] += size

    def cumulative_bps(self) -> list[int]:
        """Bits per second of layers 0..t for each t up to the highest layer seen; empty
        before a whole window was measured."""
        if self._previous is None:
            return []
        highest = max((t for t, b in enumerate(self._previous) if b), default=0)
        total, out = 0, []
        for tid in range(highest + 1):
            total += self._previous[tid]
            out.append(int(total * 8 / self._previous_span))
        return out


# The least a video publisher is asked to send: below it a camera's picture is useless to
# everyone, and a subscriber that cannot take even this gets still frames anyway.
MIN_PUBLISHER_BPS = 150_000


def publisher_ceiling(ceiling: int, estimates: list[int], recording: bool) -> int:
    """What a video publisher is asked for (REMB): no more than its best-served subscriber
    can take, so a 1:1 call with a clinic on a weak link gets a stream sized for that link
    rather than still frames; never more than the configured ceiling; the full ceiling while
    the consultation is recorded (the record is for later, not for this link) or before
    any subscriber has an estimate."""
    if recording or not estimates:
        return ceiling
    return max(min(MIN_PUBLISHER_BPS, ceiling), min(ceiling, max(estimates)))
