"""Adaptive idle polling (pure; the random source is a parameter).

A DLQ is empty most of the time, and every long poll is billed. A queue whose long polls keep
coming back empty goes idle: instead of receiving it is checked with one GetQueueAttributes
(which also feeds the depth gauges) at a growing interval, up to `max_interval`; the first
check that finds a message waiting — visible, in flight or delayed — makes it active again
(continuous long polls). At start-up an empty queue is idle at once. The added latency for the
first message after an idle period is at most the interval plus one long poll.

Checks are spread: each pause is drawn from [¾, 1] of the interval, so N queues started
together do not check in one burst, and the latency bound still holds.
"""

from __future__ import annotations

import random

EMPTY_POLLS_BEFORE_IDLE = 3  # one minute of empty 20 s long polls
FIRST_INTERVAL_SECONDS = 20.0


class IdleSchedule:
    def __init__(self, max_interval: float, rng: random.Random) -> None:
        self.max_interval = max_interval
        self._rng = rng
        self._empty = 0
        self._interval = 0.0  # 0: active

    @property
    def enabled(self) -> bool:
        return self.max_interval > 0

    @property
    def idle(self) -> bool:
        return self._interval > 0

    def received(self, count: int) -> None:
        """A receive returned `count` messages."""
        if count:
            self._empty, self._interval = 0, 0.0
            return
        self._empty += 1
        if self.enabled and self._empty >= EMPTY_POLLS_BEFORE_IDLE and not self.idle:
            self._interval = min(self.max_interval, FIRST_INTERVAL_SECONDS)

    def checked(self, waiting: int, *, first: bool = False) -> None:
        """A check found `waiting` messages (visible + in flight + delayed). The first check
        of an empty queue goes straight to the longest interval."""
        if waiting:
            self._empty, self._interval = 0, 0.0
        elif first:
            self._interval = self.max_interval
        else:
            self._interval = min(self.max_interval, max(self._interval, 1.0) * 2)

    def pause(self) -> float:
        """Seconds until the next check (spread over the last quarter of the interval)."""
        return self._interval * self._rng.uniform(0.75, 1.0)
