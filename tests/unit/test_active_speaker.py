"""The active speaker from Opus packet sizes: the loudest over a second, switched with a hold
time so two voices do not make video flicker."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace
from typing import Any

from media import speaker
from media.speaker import ActiveSpeaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _producer(pid: str, kind: str = "audio") -> Any:
    return SimpleNamespace(id=f"prod-{pid}-{kind}", participant_id=pid, kind=kind)


def _run(detector: ActiveSpeaker, clock: Clock, seconds: float, sizes: dict[str, int]) -> None:
    """``seconds`` of 20 ms Opus frames of these sizes per participant, ticking as we go."""
    frames_per_tick = round(speaker.TICK_S / 0.02)
    for _ in range(round(seconds / speaker.TICK_S)):
        for pid, size in sizes.items():
            for _ in range(frames_per_tick):
                detector.frame(_producer(pid), b"x" * size, 0, Fraction(1, 48000), False)
        clock.now += speaker.TICK_S
        detector.tick()


def test_the_loudest_becomes_the_speaker_after_the_hold_time() -> None:
    clock, changes = Clock(), []
    detector = ActiveSpeaker(lambda: changes.append(detector.current), clock=clock)
    for pid in ("a", "b"):
        detector.producer_opened(_producer(pid))
    _run(detector, clock, 0.5, {"a": 90, "b": 4})
    assert detector.current is None  # not yet: the hold time
    _run(detector, clock, 1.5, {"a": 90, "b": 4})
    assert detector.current == "a" and changes == ["a"]


def test_silence_and_noise_make_nobody_the_speaker() -> None:
    clock = Clock()
    detector = ActiveSpeaker(lambda: None, clock=clock)
    detector.producer_opened(_producer("a"))
    _run(detector, clock, 5.0, {"a": 20})  # 1,000 B/s: below the threshold
    assert detector.current is None


def test_a_new_speaker_takes_over_only_when_clearly_louder_for_the_hold_time() -> None:
    clock = Clock()
    detector = ActiveSpeaker(lambda: None, clock=clock)
    for pid in ("a", "b"):
        detector.producer_opened(_producer(pid))
    _run(detector, clock, 2.0, {"a": 90, "b": 4})
    assert detector.current == "a"
    # Both talking, b a little louder: a keeps the floor.
    _run(detector, clock, 3.0, {"a": 90, "b": 110})
    assert detector.current == "a"
    # a stops; b goes on: b after the hold time, not before.
    _run(detector, clock, 0.75, {"a": 4, "b": 110})
    assert detector.current == "a"
    _run(detector, clock, 1.5, {"a": 4, "b": 110})
    assert detector.current == "b"
    assert detector.order == ["b", "a"]


def test_video_frames_and_unknown_producers_do_not_count() -> None:
    clock = Clock()
    detector = ActiveSpeaker(lambda: None, clock=clock)
    detector.producer_opened(_producer("a", "video"))
    for _ in range(20):
        for _ in range(12):
            detector.frame(_producer("a", "video"), b"x" * 5000, 0, Fraction(1, 90000), True)
        clock.now += speaker.TICK_S
        detector.tick()
    assert detector.current is None and detector.loudness("a") == 0.0


def test_someone_who_left_is_forgotten() -> None:
    clock = Clock()
    detector = ActiveSpeaker(lambda: None, clock=clock)
    detector.producer_opened(_producer("a"))
    _run(detector, clock, 2.0, {"a": 90})
    assert detector.current == "a"
    detector.forget("a")
    assert detector.current is None and detector.order == []


async def test_bytes_from_before_it_started_do_not_count() -> None:
    clock = Clock()
    detector = ActiveSpeaker(lambda: None, clock=clock)
    for pid in ("a", "b"):
        detector.producer_opened(_producer(pid))
    # A long talk while nobody followed the speaker (no ticks)...
    for _ in range(3000):
        detector.frame(_producer("a"), b"x" * 100, 0, Fraction(1, 48000), False)
    detector.start()
    detector.stop()
    # ...is forgotten: b, talking now, is the speaker.
    _run(detector, clock, 2.0, {"a": 4, "b": 90})
    assert detector.current == "b" and detector.order == ["b"]
