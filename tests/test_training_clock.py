"""The wall-time schedules' clock leaves pauses out (SIGSTOP while benchmarks run, a sleeping
laptop): a step far slower than the recent ones counts as a typical step."""

from __future__ import annotations

import pytest

from training.clock import MIN_HISTORY, STALL_FACTOR, TrainingClock


class FakeTime:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def steps(clock: TrainingClock, now: FakeTime, durations) -> float:
    for d in durations:
        now.t += d
        clock.step()
    return clock.elapsed


def test_every_second_counts_while_steps_are_steady():
    now = FakeTime()
    clock = TrainingClock(elapsed=100.0, now=now)
    assert steps(clock, now, [2.0, 2.5, 1.5, 2.0, 3.0, 2.0]) == pytest.approx(113.0)
    assert clock.paused_s == 0


def test_a_pause_counts_as_one_typical_step():
    now = FakeTime()
    clock = TrainingClock(now=now)
    steps(clock, now, [2.0] * 10)
    steps(clock, now, [600.0])  # SIGSTOP for ten minutes
    assert clock.elapsed == pytest.approx(22.0) and clock.paused_s == pytest.approx(598.0)
    steps(clock, now, [2.0] * 5)
    assert clock.elapsed == pytest.approx(32.0)


def test_slower_steps_still_count_and_the_first_steps_always_count():
    now = FakeTime()
    clock = TrainingClock(now=now)
    first = [30.0] + [2.0] * (MIN_HISTORY - 1)  # start-up: no history to compare with yet
    steps(clock, now, first)
    assert clock.elapsed == pytest.approx(sum(first))
    slow = 2.0 * STALL_FACTOR * 0.9  # the machine got busier: slower, not paused
    steps(clock, now, [slow])
    assert clock.elapsed == pytest.approx(sum(first) + slow)


def test_time_skipped_between_steps_is_not_counted():
    now = FakeTime()
    clock = TrainingClock(now=now)
    steps(clock, now, [2.0] * 6)
    now.t += 45.0  # validation
    clock.skip()
    assert steps(clock, now, [2.0]) == pytest.approx(14.0)
