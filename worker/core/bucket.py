"""Token bucket per target with adaptive rate (AIMD), pure: the clock is a parameter.

The configured `per_second` is the ceiling. A throttle from the target multiplies the
effective rate by DECREASE (at most once per cooldown, so one burst of throttled calls
counts as one signal), down to a floor; while calls succeed the rate climbs back linearly,
by INCREASE_PER_SECOND of the ceiling per second (time-based, not per call, so a fast
target does not climb faster than a slow one). The worker thus
finds the target's real capacity without configuration, and several replicas, each backing
off on its own throttles, converge without talking to each other.

With coordination, a replica holds a `share` of the configured rate and burst (1 / live
members): the ceiling, the floor and the burst scale with it, and the adaptive rate keeps its
place relative to the ceiling, so AIMD works inside the share.
"""

from __future__ import annotations

from collections.abc import Callable

DECREASE = 0.7
INCREASE_PER_SECOND = 0.02  # of the ceiling, per second of successes
FLOOR_FRACTION = 0.02  # of the ceiling
MIN_FLOOR = 0.05  # requests per second: never stop completely
COOLDOWN_SECONDS = 1.0


class TokenBucket:
    def __init__(
        self, per_second: float, burst: int, clock: Callable[[], float], share: float = 1.0
    ) -> None:
        self.configured = (per_second, float(burst))
        self.share = share
        self.ceiling = per_second * share
        self.rate = self.ceiling
        self.burst = float(burst) * share
        self.floor = max(MIN_FLOOR * share, self.ceiling * FLOOR_FRACTION)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._last_decrease = float("-inf")
        self._last_increase = self._stamp

    def set_share(self, share: float) -> None:
        """Take `share` (0 < share <= 1) of the configured budget from now on."""
        if share == self.share:
            return
        self._refill()
        per_second, burst = self.configured
        ratio = share / self.share
        self.share = share
        self.ceiling = per_second * share
        self.floor = max(MIN_FLOOR * share, self.ceiling * FLOOR_FRACTION)
        self.rate = min(self.ceiling, max(self.floor, self.rate * ratio))
        self.burst = burst * share
        self._tokens = min(self.burst, self._tokens * ratio if self._tokens > 0 else self._tokens)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def reserve(self, count: int = 1) -> float:
        """Take `count` tokens now and return how long to wait before using them.

        Reserving ahead (the balance may go negative) keeps waiting callers in order and
        makes the wait exact: no polling.
        """
        self._refill()
        self._tokens -= count
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def available(self) -> float:
        """The tokens there now, none taken (negative: callers are waiting for them)."""
        self._refill()
        return self._tokens

    def on_throttle(self) -> None:
        now = self._clock()
        if now - self._last_decrease < COOLDOWN_SECONDS:
            return
        self._refill()
        self._last_decrease = now
        self.rate = max(self.floor, self.rate * DECREASE)

    def on_success(self) -> None:
        now = self._clock()
        elapsed = min(1.0, now - self._last_increase)  # a quiet spell is not a success streak
        self._last_increase = now
        if self.rate < self.ceiling:
            self._refill()
            self.rate = min(self.ceiling, self.rate + self.ceiling * INCREASE_PER_SECOND * elapsed)
