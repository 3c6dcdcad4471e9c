"""What a Recorder is told to do, as plain data: the messages its owner sends it.

Every command names what it is about by id (producer, participant), never by a live media
object, so the same messages can later cross a process boundary to a Recorder that lives in
the media Worker. A frame, the hot path, is a bare tuple:
``(producer id, bytes, pts, time base, keyframe)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from recordings.recorder import Recorder

Frame = tuple[str, bytes, int, Fraction, bool]


@dataclass(frozen=True, slots=True)
class Start:
    present: dict[str, str] = field(default_factory=dict)  # participant id -> role
    resume: bool = False  # go on with a recording whose Worker died


@dataclass(frozen=True, slots=True)
class Consent:
    participant: str
    granted: bool
    role: str | None = None


@dataclass(frozen=True, slots=True)
class AddTrack:
    producer: str
    participant: str
    role: str
    kind: str  # audio | video
    codec: str  # e.g. video/VP8


@dataclass(frozen=True, slots=True)
class RemoveTrack:
    producer: str


@dataclass(frozen=True, slots=True)
class Gap:
    """Frames of a Producer dropped before they reached the Recorder (its queue was full)."""

    producer: str
    dropped: int


@dataclass(frozen=True, slots=True)
class Stop:
    reason: str


Command = Start | Consent | AddTrack | RemoveTrack | Gap | Stop


def apply(
    recorder: Recorder, item: Command | Frame, request_keyframe: Callable[[str], None]
) -> None:
    """Carry out one command or frame. ``request_keyframe(producer id)`` is how a new video
    segment asks its Producer for a keyframe, wherever that Producer lives."""
    if isinstance(item, tuple):
        recorder.write(*item)
    elif isinstance(item, Consent):
        recorder.consent(item.participant, item.granted, item.role)
    elif isinstance(item, AddTrack):
        producer = item.producer
        recorder.add_track(
            producer,
            item.participant,
            item.role,
            item.kind,
            item.codec,
            request_keyframe=lambda: request_keyframe(producer),
        )
    elif isinstance(item, RemoveTrack):
        recorder.remove_track(item.producer)
    elif isinstance(item, Gap):
        recorder.gap(item.producer, item.dropped)
    elif isinstance(item, Start):
        recorder.start(item.present, resume=item.resume)
    elif isinstance(item, Stop):
        recorder.stop(item.reason)
