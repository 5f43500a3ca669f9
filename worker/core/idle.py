"""Adaptive idle polling (pure; the random source is a parameter).

A DLQ is empty most of the time, and every long poll is billed. A queue whose long polls keep
coming back empty goes idle: instead of receiving it is checked with one GetQueueAttributes
(which also feeds the depth gauges) at a growing interval, up to `max_interval`; the first
check that finds a message waiting — visible, in flight or delayed — makes it active again
(continuous long polls). At start-up an empty queue is idle at once. The added latency for the
first message after an idle period is at most the interval plus one long poll.

Checks are spread without costing more: an empty queue's first idle pause at start-up is
drawn from [½, 1] of the ceiling (a random phase, so N queues started together never check in
one burst), pauses while the interval grows from [¾, 1] of it, and at the ceiling every pause
is exactly the ceiling (12 checks an hour at 300 s; never longer, so the latency bound holds).
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
        self._phase: float | None = None  # the first pause after start-up

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
            self._phase = self.max_interval * self._rng.uniform(0.5, 1.0)
        else:
            self._interval = min(self.max_interval, max(self._interval, 1.0) * 2)

    def pause(self) -> float:
        """Seconds until the next check."""
        if self._phase is not None:
            phase, self._phase = self._phase, None
            return phase
        if self._interval >= self.max_interval:
            return self.max_interval
        return self._interval * self._rng.uniform(0.75, 1.0)
