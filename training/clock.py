"""Training time for wall-time schedules (``--max-minutes``), robust to pauses.

The campaign's run is paused with SIGSTOP while benchmarks run, and a laptop may sleep: the
wall clock keeps going, and a schedule that counted it would decay the learning rate, or
stop, without having trained. ``TrainingClock`` counts each step's wall time, except that a
step far longer than the recent ones (``STALL_FACTOR`` times their median) counts as a
typical step.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from typing import Callable

STALL_FACTOR = 10.0  # a step this many times slower than the recent median was a pause
RECENT_STEPS = 50  # steps the median is taken over
MIN_HISTORY = 5  # before this many steps every second counts


class TrainingClock:
    def __init__(self, elapsed: float = 0.0, now: Callable[[], float] = time.time):
        self.elapsed, self._now = elapsed, now
        self._tick = now()
        self._recent: deque[float] = deque(maxlen=RECENT_STEPS)
        self.paused_s = 0.0  # wall time left out so far (this process)

    def step(self) -> float:
        """One training step ended: add its time; returns the training time so far."""
        now = self._now()
        dt, self._tick = now - self._tick, now
        if len(self._recent) >= MIN_HISTORY:
            typical = statistics.median(self._recent)
            if dt > STALL_FACTOR * typical:
                self.paused_s += dt - typical
                dt = typical
        self._recent.append(dt)
        self.elapsed += dt
        return self.elapsed

    def skip(self) -> None:
        """Do not count the time since the last step (validation, checkpoints)."""
        self._tick = self._now()
