"""A consultation's call quality for its page: per participant, a summary and a small chart
over time, drawn on the server as SVG (no script, no chart library: the strict CSP stays).

Built from the Workers' samples (rooms/records/quality.py): participants are their call
role and a short opaque id, never a name. The template draws what this returns: numbers and
point lists only, so nothing a participant controls reaches the markup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from rooms.records.quality import QualityRow
from signaling.console.views import iso, utc_text

WIDTH, HEIGHT = 480, 170
LEFT, RIGHT = 40, 472  # the plot's x range (room on the left for the axis labels)
# Two panels, one above the other: frame rates, then packet loss.
FPS_TOP, FPS_BOTTOM = 10, 78
LOSS_TOP, LOSS_BOTTOM = 96, 150
# A chart of a long call keeps at most this many points per line (averaged bins).
MAX_POINTS = 120


@dataclass(frozen=True)
class Line:
    css: str  # q-sent | q-received
    segments: tuple[str, ...]  # SVG polyline points; a gap where nothing was measured


@dataclass(frozen=True)
class Panel:
    top: int
    bottom: int
    ceiling: str  # the value at the top of the axis, as shown
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class Participant:
    id: str  # opaque, shortened for people to tell two sessions apart
    role: str
    started_at: str
    started_text: str
    duration: str  # m:ss
    samples: int
    loss_in: str  # percentages and averages, formatted; "–" where nothing was measured
    loss_in_worst: str
    loss_out: str
    rtt_ms: str
    fps_in: str
    fps_out: str
    kbps_in: str
    kbps_out: str
    fps: Panel
    loss: Panel


def report(rows: Sequence[QualityRow]) -> list[Participant]:
    """One entry per participant session, in the order they first appear."""
    by_participant: dict[str, list[QualityRow]] = {}
    for row in rows:
        by_participant.setdefault(row.participant_id, []).append(row)
    return [_participant(pid, samples) for pid, samples in by_participant.items()]


def _participant(participant_id: str, rows: list[QualityRow]) -> Participant:
    rows = sorted(rows, key=lambda r: r.at)
    first, last = rows[0], rows[-1]
    start = first.at.timestamp() - first.interval_s
    span = max(1.0, last.at.timestamp() - start)

    def values(pick: Callable[[QualityRow], float | None]) -> list[float]:
        return [v for v in (pick(r) for r in rows) if v is not None]

    fps_in, fps_out = values(lambda r: r.fps_in), values(lambda r: r.fps_out)
    loss_in, loss_out = values(lambda r: r.loss_in), values(lambda r: r.loss_out)
    fps_ceiling = max(30.0, *fps_in, *fps_out) if fps_in or fps_out else 30.0
    loss_ceiling = max(0.05, *loss_in, *loss_out) if loss_in or loss_out else 0.05
    x = _x_of(start, span)
    return Participant(
        id=participant_id[:7],
        role=first.role,
        started_at=iso(_start_time(first)),
        started_text=utc_text(_start_time(first)),
        duration=_minutes(span),
        samples=len(rows),
        loss_in=_percent(_mean(loss_in)),
        loss_in_worst=_percent(max(loss_in) if loss_in else None),
        loss_out=_percent(_mean(loss_out)),
        rtt_ms=_number(_mean(values(lambda r: r.rtt_ms))),
        fps_in=_number(_mean(fps_in)),
        fps_out=_number(_mean(fps_out)),
        kbps_in=_number(_mean(values(lambda r: r.kbps_in))),
        kbps_out=_number(_mean(values(lambda r: r.kbps_out))),
        fps=Panel(
            FPS_TOP,
            FPS_BOTTOM,
            _number(fps_ceiling),
            (
                _line("q-sent", rows, lambda r: r.fps_in, x, fps_ceiling, FPS_TOP, FPS_BOTTOM),
                _line("q-received", rows, lambda r: r.fps_out, x, fps_ceiling, FPS_TOP, FPS_BOTTOM),
            ),
        ),
        loss=Panel(
            LOSS_TOP,
            LOSS_BOTTOM,
            _percent(loss_ceiling),
            (
                _line("q-sent", rows, lambda r: r.loss_in, x, loss_ceiling, LOSS_TOP, LOSS_BOTTOM),
                _line(
                    "q-received", rows, lambda r: r.loss_out, x, loss_ceiling, LOSS_TOP, LOSS_BOTTOM
                ),
            ),
        ),
    )


def _start_time(row: QualityRow) -> datetime:
    return datetime.fromtimestamp(row.at.timestamp() - row.interval_s, row.at.tzinfo)


def _x_of(start: float, span: float) -> Callable[[datetime], float]:
    def x(at: datetime) -> float:
        return LEFT + (RIGHT - LEFT) * (at.timestamp() - start) / span

    return x


def _line(
    css: str,
    rows: list[QualityRow],
    pick: Callable[[QualityRow], float | None],
    x: Callable[[datetime], float],
    ceiling: float,
    top: int,
    bottom: int,
) -> Line:
    """Averaged into at most MAX_POINTS bins; a bin with nothing measured breaks the line."""
    size = max(1, -(-len(rows) // MAX_POINTS))
    segments: list[list[str]] = [[]]
    for i in range(0, len(rows), size):
        chunk = rows[i : i + size]
        measured = [v for v in (pick(r) for r in chunk) if v is not None]
        if not measured:
            if segments[-1]:
                segments.append([])
            continue
        value = min(ceiling, sum(measured) / len(measured))
        px = x(chunk[-1].at)
        py = bottom - (bottom - top) * (value / ceiling if ceiling > 0 else 0)
        segments[-1].append(f"{px:.1f},{py:.1f}")
    # A single point draws nothing: double it so it shows as a dot.
    drawn = tuple(" ".join(s if len(s) > 1 else s * 2) for s in segments if s)
    return Line(css, drawn)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _minutes(seconds: float) -> str:
    total = round(seconds)
    return f"{total // 60}:{total % 60:02d}"
