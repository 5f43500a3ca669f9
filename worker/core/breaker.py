"""Circuit breaker per target, pure: the clock is a parameter.

Closed: a count-based window of the last `window` calls; with at least `minimum_calls` in it
and a failure rate at or above the threshold, it opens. Open: no calls for `open_seconds`,
doubled on each re-trip up to `max_open_seconds`. Half-open: `half_open_probes` trial calls;
one failure re-trips, all succeeding closes (and resets the doubling).

Only throttles and retryable/unknown errors count as failures; a permanent error (a bad
payload) shows the target is up and counts as a success.

With coordination, a replica sees its `share` of the fleet's calls, so it judges on its share
of the window and of `minimum_calls` (never fewer than MIN_SHARED_CALLS: one transient error
must not open every replica's breaker); a state published by another replica is adopted with
`adopt_open` / `adopt_close`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from enum import IntEnum

from worker.settings import CircuitBreakerSettings


class State(IntEnum):  # the values are the `retry_worker_circuit_state` gauge
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


Listener = Callable[[State], None]
MIN_SHARED_CALLS = 3


class CircuitBreaker:
    def __init__(
        self,
        settings: CircuitBreakerSettings,
        clock: Callable[[], float],
        on_change: Listener | None = None,
    ) -> None:
        self._s = settings
        self._clock = clock
        self._on_change = on_change
        self._window: deque[bool] = deque(maxlen=settings.window)  # True: failure
        self.minimum_calls = settings.minimum_calls
        self._state = State.CLOSED
        self.trips = 0
        self.open_until = 0.0
        self._probes_started = 0
        self._probes_passed = 0

    def set_share(self, share: float) -> None:
        """Judge on `share` of the configured window and minimum (coordination)."""
        wanted = self._s.minimum_calls
        minimum = max(min(wanted, MIN_SHARED_CALLS), math.ceil(wanted * share - 1e-9))
        window = max(minimum, math.ceil(self._s.window * share - 1e-9))
        self.minimum_calls = minimum
        if window != self._window.maxlen:
            self._window = deque(self._window, maxlen=window)

    def adopt_open(self, open_until: float, trips: int) -> bool:
        """Open as another replica published (`open_until` on this clock); False when this
        breaker is already open at least that long."""
        if self._state is State.OPEN and self.open_until >= open_until:
            return False
        self.trips = trips
        self.open_until = open_until
        self._window.clear()
        self._enter(State.OPEN)
        return True

    def adopt_close(self) -> bool:
        """Close as another replica published (its probes passed)."""
        if self._state is State.CLOSED:
            return False
        self._close()
        return True

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self._clock() >= self.open_until:
            self._enter(State.HALF_OPEN)
        return self._state

    def permits(self) -> int | None:
        """How many calls may start now: None for no limit, 0 while open."""
        match self.state:
            case State.CLOSED:
                return None
            case State.OPEN:
                return 0
            case State.HALF_OPEN:
                return self._s.half_open_probes - self._probes_started
        raise AssertionError("unreachable")  # pragma: no cover

    def acquire(self, wanted: int) -> int:
        """Claim up to `wanted` calls; returns how many may go ahead."""
        allowed = self.permits()
        granted = wanted if allowed is None else min(wanted, allowed)
        if self._state is State.HALF_OPEN:
            self._probes_started += granted
        return granted

    def record(self, failed: bool) -> None:
        state = self.state
        if state is State.HALF_OPEN:
            if failed:
                self._trip()
                return
            self._probes_passed += 1
            if self._probes_passed >= self._s.half_open_probes:
                self._close()
            return
        if state is State.OPEN:
            return  # a call that started before the trip: already counted
        self._window.append(failed)
        if len(self._window) >= self.minimum_calls:
            rate = sum(self._window) / len(self._window)
            if rate >= self._s.failure_rate_threshold:
                self._trip()

    def seconds_until_half_open(self) -> float:
        return max(0.0, self.open_until - self._clock()) if self.state is State.OPEN else 0.0

    def _trip(self) -> None:
        self.trips += 1
        doubling = 2 ** min(self.trips - 1, 40)  # bounded: past the cap it no longer matters
        duration = min(self._s.max_open_seconds, self._s.open_seconds * doubling)
        self.open_until = self._clock() + duration
        self._window.clear()
        self._enter(State.OPEN)

    def _close(self) -> None:
        self.trips = 0
        self._window.clear()
        self._enter(State.CLOSED)

    def _enter(self, state: State) -> None:
        self._state = state
        self._probes_started = 0
        self._probes_passed = 0
        if self._on_change is not None:
            self._on_change(state)
