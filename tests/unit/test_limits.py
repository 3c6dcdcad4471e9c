"""Per-connection budgets on a fake clock: honest bursts pass, floods are cut, bytes count."""

from __future__ import annotations

from signaling.room.limits import (
    BYTE_BURST,
    MESSAGE_BURST,
    ConnectionBudget,
    TokenBucket,
    Verdict,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(10, 5, clock=clock)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 0.1
    assert bucket.take() and not bucket.take()
    clock.now += 100
    assert sum(bucket.take() for _ in range(10)) == 5


def test_a_burst_of_candidates_and_a_burst_of_300_messages_are_forgiven() -> None:
    clock = Clock()
    budget = ConnectionBudget(clock=clock)
    verdicts = [budget.admit(200) for _ in range(300)]
    assert verdicts.count(Verdict.accept) == MESSAGE_BURST
    assert Verdict.cut not in verdicts
    clock.now += 60
    assert budget.admit(200) is Verdict.accept and budget.refusals_in_a_row == 0


def test_a_flood_of_5000_per_second_is_cut_within_a_tenth_of_a_second() -> None:
    clock = Clock()
    budget = ConnectionBudget(clock=clock)
    for i in range(5000):
        clock.now = i / 5000
        if budget.admit(30) is Verdict.cut:
            break
    assert clock.now < 0.15


def test_twice_the_rate_is_cut_in_seconds_and_the_rate_itself_never() -> None:
    for rate, cut_within in ((100, 20.0), (50, None)):
        clock = Clock()
        budget = ConnectionBudget(clock=clock)
        cut_at = None
        for i in range(rate * 60):
            clock.now = i / rate
            if budget.admit(30) is Verdict.cut:
                cut_at = clock.now
                break
        if cut_within is None:
            assert cut_at is None
        else:
            assert cut_at is not None and cut_at < cut_within


def test_bytes_are_spent_on_arrival_and_overspending_cuts() -> None:
    clock = Clock()
    budget = ConnectionBudget(clock=clock)
    size = 60 * 1024
    count = 0
    while budget.admit(size) is not Verdict.cut:
        count += 1
        clock.now += 0.05
        assert count < 100
    assert count * size <= BYTE_BURST + clock.now * 64 * 1024 + size
