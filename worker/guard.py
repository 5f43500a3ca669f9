"""A target's protection: its token bucket and circuit breaker, shared by every queue that
feeds the same target (same ARN/URL), with the waiting done here and the maths in the core."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import structlog

from worker.core.breaker import CircuitBreaker, State
from worker.core.bucket import TokenBucket
from worker.core.errors import DeliveryError, ErrorKind
from worker.metrics import Metrics
from worker.settings import CircuitBreakerSettings, RateLimitSettings

log = structlog.get_logger("worker.guard")

MAX_WAIT_SLICE_SECONDS = 5.0  # waits are sliced so loops keep beating for liveness


class Guard:
    def __init__(
        self,
        name: str,
        rate_limit: RateLimitSettings,
        breaker: CircuitBreakerSettings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._metrics = metrics
        self._changed = anyio.Event()
        self._waiting = 0  # queues waiting in wait_until_permitted
        self.bucket = TokenBucket(rate_limit.per_second, rate_limit.burst, clock)
        self.breaker = CircuitBreaker(breaker, clock, self._on_change)
        metrics.circuit_state.labels(name).set(State.CLOSED)

    def _on_change(self, state: State) -> None:
        self._metrics.circuit_state.labels(self.name).set(state)
        self._metrics.circuit_transitions.labels(self.name, state.name.lower()).inc()
        event = "circuit_opened" if state is State.OPEN else f"circuit_{state.name.lower()}"
        level = log.warning if state is State.OPEN else log.info
        level(event, target=self.name, open_for=round(self.breaker.seconds_until_half_open(), 1))
        self._wake()

    def _wake(self) -> None:
        """Wake the queues waiting for the breaker; a new event only if one was waited on
        (this runs for every delivery: no allocation on the hot path)."""
        if self._waiting:
            self._changed.set()
            self._changed = anyio.Event()

    def receive_limit(self) -> int | None:
        """How many messages a feeding queue may receive now (None: no limit)."""
        return self.breaker.permits()

    async def wait_until_permitted(self, beat: Callable[[], None]) -> None:
        """While the breaker admits nothing, wait (without receiving: each receive costs an
        attempt and an API call)."""
        while self.breaker.permits() == 0:
            beat()
            pause = self.breaker.seconds_until_half_open() or MAX_WAIT_SLICE_SECONDS
            self._waiting += 1
            try:
                with anyio.move_on_after(min(pause, MAX_WAIT_SLICE_SECONDS)):
                    await self._changed.wait()
            finally:
                self._waiting -= 1
        beat()

    async def admit(self, wanted: int) -> int:
        """Claim breaker permits and rate tokens for up to `wanted` calls; waits for tokens."""
        granted = self.breaker.acquire(wanted)
        if granted:
            wait = self.bucket.reserve(granted)
            if wait > 0:
                self._metrics.rate_limit_wait.labels(self.name).inc(wait)
                await anyio.sleep(wait)
        return granted

    def retry_delay(self) -> float:
        """When a message the breaker refused should come back."""
        return max(1.0, self.breaker.seconds_until_half_open())

    def record(self, error: DeliveryError | None) -> None:
        if error is None or error.kind is ErrorKind.PERMANENT:
            self.bucket.on_success()
            self.breaker.record(failed=False)
        else:
            if error.kind is ErrorKind.THROTTLED:
                self.bucket.on_throttle()
            self.breaker.record(failed=True)
        self._wake()
