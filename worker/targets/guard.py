"""A target's protection: its token bucket and circuit breaker, shared by every queue that
feeds the same target (same ARN/URL), with the waiting done here and the maths in the core;
and the one delivery step every caller takes through it (`Guard.deliver`: admit → deliver →
record), the queue loop's pipeline and an operator's replay alike.

With coordination (`fleet`), the guard takes its share of the budget, tells the fleet about
its own breaker transitions (to publish them), adopts the ones other replicas published, and
in half-open makes probes only while the fleet says this replica holds the probe lease.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio
import structlog

from worker.core.breaker import CircuitBreaker, State
from worker.core.bucket import TokenBucket
from worker.core.errors import DeliveryError, ErrorKind
from worker.metrics import Metrics
from worker.settings import CircuitBreakerSettings, RateLimitSettings
from worker.targets.base import Delivery, Target

log = structlog.get_logger("worker.targets.guard")

MAX_WAIT_SLICE_SECONDS = 5.0  # waits are sliced so loops keep beating for liveness


class Fleet(Protocol):
    """What a guard needs of the coordination (`worker.fleet.coordinator.Coordinator`)."""

    @property
    def share(self) -> float: ...

    def may_probe(self, key: str) -> bool: ...

    def changed(self, guard: Guard, state: State) -> None: ...


class Guard:
    def __init__(
        self,
        name: str,
        rate_limit: RateLimitSettings,
        breaker: CircuitBreakerSettings,
        metrics: Metrics,
        *,
        key: str = "",
        fleet: Fleet | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.key = key or name  # the target's identity (shared with other replicas)
        self.fleet = fleet
        self._adopting = False
        self._metrics = metrics
        self._changed = anyio.Event()
        self._waiting = 0  # queues waiting in wait_until_permitted
        self.bucket = TokenBucket(rate_limit.per_second, rate_limit.burst, clock)
        self.breaker = CircuitBreaker(breaker, clock, self._on_change)
        metrics.circuit_state.labels(name).set(State.CLOSED)
        if fleet is not None:
            self.set_share(fleet.share)

    def _on_change(self, state: State) -> None:
        self._metrics.circuit_state.labels(self.name).set(state)
        self._metrics.circuit_transitions.labels(self.name, state.name.lower()).inc()
        event = "circuit_opened" if state is State.OPEN else f"circuit_{state.name.lower()}"
        level = log.warning if state is State.OPEN else log.info
        level(
            event,
            target=self.name,
            open_for=round(self.breaker.seconds_until_half_open(), 1),
            **({"by": "fleet"} if self._adopting else {}),
        )
        if self.fleet is not None and not self._adopting:
            self.fleet.changed(self, state)
        self.wake()

    def set_share(self, share: float) -> None:
        self.bucket.set_share(share)
        self.breaker.set_share(share)

    def adopt(self, open_until: float | None, trips: int = 0) -> bool:
        """Take a state another replica published: open until `open_until` (this clock),
        or closed (None). Not published again."""
        self._adopting = True
        try:
            if open_until is None:
                return self.breaker.adopt_close()
            return self.breaker.adopt_open(open_until, trips)
        finally:
            self._adopting = False

    def _permits(self) -> int | None:
        permits = self.breaker.permits()
        if permits and self.fleet is not None and self.breaker.state is State.HALF_OPEN:
            return permits if self.fleet.may_probe(self.key) else 0
        return permits

    def wake(self) -> None:
        """Wake the queues waiting for the breaker; a new event only if one was waited on
        (this runs for every delivery: no allocation on the hot path)."""
        if self._waiting:
            self._changed.set()
            self._changed = anyio.Event()

    def receive_limit(self) -> int | None:
        """How many messages a feeding queue may receive now (None: no limit)."""
        return self._permits()

    def keeps_up(self, count: int) -> bool:
        """Whether `count` messages could be delivered now without waiting: the breaker admits
        everything and the bucket holds their tokens (a busy queue adds a receive in flight
        only then, never to pile messages up in front of its target)."""
        return self._permits() is None and self.bucket.available() >= count

    async def wait_until_permitted(self, beat: Callable[[], None]) -> None:
        """While the breaker admits nothing, wait (without receiving: each receive costs an
        attempt and an API call)."""
        while self._permits() == 0:
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
        granted = 0 if self._permits() == 0 else self.breaker.acquire(wanted)
        if granted:
            wait = self.bucket.reserve(granted)
            if wait > 0:
                self._metrics.rate_limit_wait.labels(self.name).inc(wait)
                await anyio.sleep(wait)
        return granted

    def chunk_size(self) -> int:
        """The most calls to start at once: the burst (at least one)."""
        return max(1, int(self.bucket.burst))

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
        self.wake()

    async def deliver(
        self,
        target: Target,
        deliveries: Sequence[Delivery],
        *,
        on_answer: Callable[[int, Tried], None] | None = None,
    ) -> list[Tried | None]:
        """The one delivery step: admit, deliver, record. Calls start in chunks no larger
        than the burst, each as soon as its tokens are there (a batch larger than the burst,
        as with a replica's share of it, would otherwise go out at once and overrun the
        rate). A target that takes one message per call gets one call per message, and
        `on_answer(position, tried)` hears each answer as it comes. Returns, in the order
        given, what the target answered, or None for a delivery the breaker refused (not
        tried: it comes back after `retry_delay()`)."""
        results: list[Tried | None] = [None] * len(deliveries)

        async def call(start: int, chunk: Sequence[Delivery]) -> None:
            started = time.monotonic()
            errors = await target.deliver(chunk)
            duration = time.monotonic() - started
            for offset, (delivery, error) in enumerate(zip(chunk, errors, strict=True)):
                self.record(error)
                tried = results[start + offset] = Tried(delivery, error, duration)
                if on_answer is not None:
                    on_answer(start + offset, tried)

        if not deliveries:
            return results
        admitted = await self.admit(min(len(deliveries), self.chunk_size()))
        if admitted == len(deliveries) and (len(deliveries) == 1 or not target.one_per_call):
            await call(0, deliveries)  # one call: no task group (the common case of a batch)
            return results
        start = 0
        async with anyio.create_task_group() as tg:
            while start < len(deliveries):
                if start:
                    admitted = await self.admit(min(len(deliveries) - start, self.chunk_size()))
                if not admitted:
                    break
                step = 1 if target.one_per_call else admitted
                for first in range(start, start + admitted, step):
                    tg.start_soon(call, first, deliveries[first : first + step])
                start += admitted
        return results


@dataclass(frozen=True)
class Tried:
    """A delivery the guard admitted and the target answered."""

    delivery: Delivery
    error: DeliveryError | None  # None: accepted
    duration: float  # seconds the call took
