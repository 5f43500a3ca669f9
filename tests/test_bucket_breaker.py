"""Token bucket and circuit breaker: pure, with a fake clock."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from worker.core.breaker import CircuitBreaker, State
from worker.core.bucket import TokenBucket
from worker.core.errors import DeliveryError, ErrorKind
from worker.fleet.guards import Guards
from worker.metrics import Metrics
from worker.settings import CircuitBreakerSettings, QueueSettings, RateLimitSettings
from worker.targets.guard import Guard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def greedy(bucket: TokenBucket, clock: Clock, seconds: float) -> int:
    """Take a token whenever one is free, for `seconds`; count the grants."""
    granted, end = 0, clock.now + seconds
    while clock.now < end:
        wait = bucket.reserve()
        clock.advance(wait)
        granted += 1
    return granted


def test_burst_is_free_then_the_rate_holds():
    clock = Clock()
    bucket = TokenBucket(per_second=10, burst=20, clock=clock)
    assert [bucket.reserve() for _ in range(20)] == [0.0] * 20
    assert bucket.reserve() == pytest.approx(0.1)
    assert bucket.reserve() == pytest.approx(0.2)  # reservations queue up in order


def test_over_time_grants_equal_burst_plus_rate():
    clock = Clock()
    bucket = TokenBucket(per_second=10, burst=20, clock=clock)
    assert greedy(bucket, clock, 10) == pytest.approx(20 + 100, abs=1)


def test_idle_time_refills_only_up_to_the_burst():
    clock = Clock()
    bucket = TokenBucket(per_second=10, burst=5, clock=clock)
    [bucket.reserve() for _ in range(5)]
    clock.advance(3600)
    assert [bucket.reserve() for _ in range(5)] == [0.0] * 5
    assert bucket.reserve() > 0


def test_throttles_lower_the_rate_once_per_cooldown_down_to_a_floor():
    clock = Clock()
    bucket = TokenBucket(per_second=100, burst=10, clock=clock)
    bucket.on_throttle()
    bucket.on_throttle()  # same burst of throttles: one signal
    assert bucket.rate == pytest.approx(70)
    for _ in range(100):
        clock.advance(1.1)
        bucket.on_throttle()
    assert bucket.rate == pytest.approx(bucket.floor) == pytest.approx(2)


def test_successes_raise_the_rate_back_over_time_to_the_ceiling_and_no_further():
    clock = Clock()
    bucket = TokenBucket(per_second=100, burst=10, clock=clock)
    bucket.on_throttle()  # 70
    for _ in range(1000):  # a burst of successes in one instant is not a trend
        bucket.on_success()
    assert bucket.rate == pytest.approx(70)
    for _ in range(14):  # two per cent of the ceiling per second of successes
        clock.advance(1)
        bucket.on_success()
    assert bucket.rate == pytest.approx(98)
    clock.advance(3600)  # a quiet hour counts as one second, not a success streak
    bucket.on_success()
    assert bucket.rate == 100
    clock.advance(5)
    bucket.on_success()
    assert bucket.rate == 100


BREAKER = CircuitBreakerSettings(
    window=4,
    minimum_calls=4,
    failure_rate_threshold=0.5,
    open_seconds=10,
    max_open_seconds=35,
    half_open_probes=2,
)


def test_breaker_opens_at_the_failure_rate_after_minimum_calls():
    clock = Clock()
    changes: list[State] = []
    breaker = CircuitBreaker(BREAKER, clock, changes.append)
    for failed in (True, False, True):
        breaker.record(failed)
    assert breaker.state is State.CLOSED  # 3 calls: below minimum_calls
    breaker.record(False)  # 2 of 4 failed: 0.5
    assert breaker.state is State.OPEN
    assert breaker.permits() == 0
    assert changes == [State.OPEN]


def test_breaker_window_slides():
    breaker = CircuitBreaker(BREAKER, Clock())
    for failed in (True, False, False, False, False, True):
        breaker.record(failed)
    assert breaker.state is State.CLOSED  # last four: one failure


def test_breaker_half_opens_then_closes_after_successful_probes():
    clock = Clock()
    breaker = CircuitBreaker(BREAKER, clock)
    for _ in range(4):
        breaker.record(True)
    clock.advance(9.9)
    assert breaker.state is State.OPEN
    assert breaker.seconds_until_half_open() == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.state is State.HALF_OPEN
    assert breaker.acquire(10) == 2  # only the probes
    assert breaker.permits() == 0
    breaker.record(False)
    assert breaker.state is State.HALF_OPEN
    breaker.record(False)
    assert breaker.state is State.CLOSED
    assert breaker.permits() is None


def test_breaker_retrips_with_doubled_open_time_up_to_the_cap():
    clock = Clock()
    breaker = CircuitBreaker(BREAKER, clock)
    for _ in range(4):
        breaker.record(True)
    durations = []
    for _ in range(4):
        durations.append(breaker.seconds_until_half_open())
        clock.advance(durations[-1])
        assert breaker.acquire(1) == 1
        breaker.record(True)  # the probe fails: re-trip
    assert durations == [10, 20, 35, 35]
    # a success streak closes and resets the doubling
    clock.advance(35)
    breaker.acquire(2)
    breaker.record(False)
    breaker.record(False)
    for _ in range(4):
        breaker.record(True)
    assert breaker.seconds_until_half_open() == 10


def _guard(clock: Clock) -> Guard:
    limit = RateLimitSettings(per_second=10, burst=5)
    return Guard("t", limit, BREAKER, Metrics(CollectorRegistry()), clock=clock)


@pytest.mark.parametrize(
    ("kind", "opens"),
    [
        (ErrorKind.PERMANENT, False),
        (ErrorKind.THROTTLED, True),
        (ErrorKind.RETRYABLE, True),
        (ErrorKind.UNKNOWN, True),
    ],
)
def test_only_target_trouble_trips_the_breaker(kind, opens):
    guard = _guard(Clock())
    for _ in range(4):
        guard.record(DeliveryError(kind, "X"))
    assert (guard.breaker.state is State.OPEN) == opens


def test_a_throttle_lowers_the_shared_rate():
    guard = _guard(Clock())
    guard.record(DeliveryError(ErrorKind.THROTTLED, "TooManyRequestsException"))
    assert guard.bucket.rate == pytest.approx(7)


def _queue(name: str, function: str, per_second: float = 10) -> QueueSettings:
    return QueueSettings(
        name=name,
        target={"kind": "lambda", "function": function},
        rate_limit={"per_second": per_second},
    )


def test_queues_feeding_one_target_share_one_guard():
    metrics = Metrics(CollectorRegistry())
    guards = Guards(None, metrics)
    a = guards.guard(_queue("a", "fn"), "fn")
    b = guards.guard(_queue("b", "fn"), "fn")
    c = guards.guard(_queue("c", "other"), "other")
    assert a is b
    assert c is not a
    # one budget: what queue a takes, queue b cannot
    for _ in range(20):
        a.bucket.reserve()
    assert b.bucket.reserve() > 0


def test_a_share_of_the_bucket_holds_its_share_of_the_rate():
    clock = Clock()
    bucket = TokenBucket(per_second=10, burst=20, clock=clock, share=1 / 3)
    # burst 20/3 free, then 10/3 a second: 6.67 + 33.3 over 10 s
    assert greedy(bucket, clock, 10.0) == pytest.approx(40, abs=1)
    bucket.set_share(1.0)  # the others left: the whole budget
    clock.advance(10.0)
    assert greedy(bucket, clock, 10.0) == pytest.approx(120, abs=1)


def test_adaptive_rate_keeps_its_place_inside_a_changing_share():
    clock = Clock()
    bucket = TokenBucket(per_second=10, burst=20, clock=clock)
    bucket.on_throttle()  # 7/s of 10
    bucket.set_share(0.5)
    assert (bucket.ceiling, bucket.rate) == (5.0, pytest.approx(3.5))
    for _ in range(200):  # successes climb back, never past the share
        clock.advance(1.0)
        bucket.on_success()
    assert bucket.rate == 5.0


@pytest.mark.parametrize(("share", "minimum"), [(1.0, 10), (0.5, 5), (1 / 3, 4), (0.1, 3)])
def test_a_share_of_the_breaker_window_never_trips_on_one_error(share, minimum):
    clock = Clock()
    breaker = CircuitBreaker(CircuitBreakerSettings(window=20, minimum_calls=10), clock)
    breaker.set_share(share)
    calls = 0
    while breaker.state is State.CLOSED:
        breaker.record(failed=True)
        calls += 1
    assert calls == minimum
