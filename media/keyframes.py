"""Which keyframe requests reach a publisher: one weak link must cost only its own quality.

A keyframe is the most expensive thing a publisher sends (5-20 times a delta frame): every
one it is asked for lowers the quality of the frames around it for every subscriber. Two
kinds of request are told apart:

- **start**: a Consumer has nothing it can decode (it is new, resumed, or its Producer
  lost frames upstream). It cannot show anything until a keyframe comes, so these go up
  at most once per ``keyframe_interval_s`` (0.3 s), deferred to the end of the interval,
  never dropped (media/producer.py).
- **repair**: a subscriber's own PLI or FIR about a stream it was decoding. aiortc already
  answers its NACKs from the Consumer's own RTP history (128 packets per sender), so a PLI
  means a loss NACK could not repair. These are judged per subscriber first
  (``RepairJudge``): one subscriber may cause at most one keyframe per
  ``CONSUMER_REPAIR_INTERVAL_S``; a subscriber asking ``WEAK_REQUESTS`` times within
  ``WEAK_WINDOW_S`` is on a link that cannot carry the stream, and its video is lowered
  (media/consumer.py) instead of asking the publisher for anything. What passes is
  aggregated per Producer: at most one repair keyframe per ``REPAIR_INTERVAL_S``, however
  many subscribers ask, and a request that comes inside it is answered by the keyframe
  already asked for. That interval is the ceiling on what subscribers' losses can cost
  everyone else: 20 keyframes a minute at the very worst, against 165 measured with one
  lossy subscriber when every PLI went up at the 0.3 s limit.
"""

from __future__ import annotations

import collections
from enum import Enum

# One repair keyframe per Producer per this long, whoever asks.
REPAIR_INTERVAL_S = 3.0
# One subscriber's requests are honoured at most once per this long.
CONSUMER_REPAIR_INTERVAL_S = 5.0
# A subscriber that asks this often is on a link that cannot carry the stream.
WEAK_REQUESTS = 3
WEAK_WINDOW_S = 10.0
# A subscriber on still frames is sent a fresh one this often (asked for as a repair).
STILL_INTERVAL_S = 8.0


class Verdict(Enum):
    FORWARD = "forward"  # ask the Producer for a repair keyframe
    IGNORE = "ignore"  # answered by a keyframe already asked for, or too soon
    WEAK = "weak"  # lower this subscriber's video instead


class RepairJudge:
    """One Consumer's keyframe requests, judged before any reaches its Producer."""

    def __init__(self) -> None:
        self._recent: collections.deque[float] = collections.deque()
        self._last_forwarded = -1e9
        self.forwarded = 0
        self.ignored = 0
        self.weak_verdicts = 0

    def judge(self, now: float) -> Verdict:
        recent = self._recent
        recent.append(now)
        while recent and now - recent[0] > WEAK_WINDOW_S:
            recent.popleft()
        if len(recent) >= WEAK_REQUESTS:
            recent.clear()
            self.weak_verdicts += 1
            return Verdict.WEAK
        if now - self._last_forwarded >= CONSUMER_REPAIR_INTERVAL_S:
            self._last_forwarded = now
            self.forwarded += 1
            return Verdict.FORWARD
        self.ignored += 1
        return Verdict.IGNORE

    def forgive(self) -> None:
        """Start afresh (the subscriber was moved to a lower rate)."""
        self._recent.clear()
