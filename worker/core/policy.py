"""Retry policy: attempt counting, backoff maths, the retry-or-park decision, and the
visibility arithmetic of one receive (pure).

The random source and the clock reading are parameters, so tests are exact.
"""

from __future__ import annotations

import math
import random

from worker.core.envelope import DlqMessage
from worker.core.errors import DeliveryError, ErrorKind
from worker.core.outcomes import Park, Retry
from worker.settings import VISIBILITY_LIMIT_SECONDS, BackoffSettings, PolicySettings

# After its backoff a message must still be received and tried before SQS drops it.
EXPIRY_MARGIN_SECONDS = 60.0


def attempt_number(message: DlqMessage, arrived_with: int) -> int:
    """1 for the first try in this DLQ.

    `arrived_with` is the receive count the message had when it reached the DLQ (the source
    queue's `maxReceiveCount` for SQS redrive, else 0). Attempts made in earlier cycles travel
    in our marker attribute (an SQS source queue that dead-letters the message again).
    """
    return max(1, message.carried_attempts + message.receive_count - arrived_with)


def base_delay(attempt: int, backoff: BackoffSettings) -> float:
    """`initial * multiplier^(attempt-1)`, capped at `max_seconds`."""
    exponent = max(0, attempt - 1)
    # Compare in logs first: a large attempt count must not overflow the float.
    if backoff.multiplier > 1 and backoff.initial_seconds > 0:
        limit = backoff.max_seconds / backoff.initial_seconds
        if limit <= 0 or exponent * math.log(backoff.multiplier) >= math.log(limit):
            return backoff.max_seconds
    return min(backoff.max_seconds, backoff.initial_seconds * backoff.multiplier**exponent)


def backoff_delay(attempt: int, backoff: BackoffSettings, rng: random.Random) -> float:
    """The delay before attempt `attempt + 1`, with the configured jitter.

    - none: the base delay
    - full: uniform in [0, base]
    - equal: base/2 + uniform in [0, base/2]
    - decorrelated: uniform in [initial, 3 * previous base], capped. SQS keeps no state
      between receives, so "previous" is the base delay of the previous attempt.
    """
    base = base_delay(attempt, backoff)
    match backoff.jitter:
        case "none":
            return base
        case "full":
            return rng.uniform(0, base)
        case "equal":
            return base / 2 + rng.uniform(0, base / 2)
        case "decorrelated":
            previous = base_delay(attempt - 1, backoff) if attempt > 1 else backoff.initial_seconds
            low = backoff.initial_seconds
            return min(backoff.max_seconds, rng.uniform(low, max(low, previous * 3)))
    raise ValueError(f"unknown jitter {backoff.jitter!r}")  # pragma: no cover


def gate(message: DlqMessage, attempt: int, policy: PolicySettings, now: float) -> Park | None:
    """Before delivering: a message past its limits is parked without another try."""
    if attempt > policy.max_attempts:
        return Park("max_attempts", "max_attempts_exceeded")
    age = message.age(now)
    if policy.max_age_seconds is not None and age is not None and age > policy.max_age_seconds:
        return Park("max_age", "max_age_exceeded")
    return None


def on_failure(
    error: DeliveryError,
    attempt: int,
    message: DlqMessage,
    policy: PolicySettings,
    now: float,
    rng: random.Random,
    retention_seconds: float | None = None,
) -> Retry | Park:
    """After a failed delivery: retry later (with backoff) or park.

    `retention_seconds` is the DLQ's retention period: a message that would expire before
    its next try (SQS counts retention from the original SentTimestamp) is parked as
    `expiring` rather than left to vanish.
    """
    reason = error.park_reason or "permanent_error"
    if error.code in policy.park_on:
        return Park(reason, error.code)
    if error.kind is ErrorKind.PERMANENT and error.code not in policy.retry_on:
        return Park(reason, error.code)
    delay = backoff_delay(attempt, policy.backoff, rng)
    if error.retry_after is not None:
        delay = min(max(delay, error.retry_after), policy.backoff.max_seconds)
    return later(delay, error.code, attempt, message, policy, now, retention_seconds)


def later(
    delay: float,
    code: str,
    attempt: int,
    message: DlqMessage,
    policy: PolicySettings,
    now: float,
    retention_seconds: float | None = None,
) -> Retry | Park:
    """Try again after `delay` — a retry after a failure, or a deferral a rule or hook asked
    for (it counts as an attempt) — unless that was the last attempt, or the message would
    outlive `max_age` or expire from the DLQ first."""
    if attempt >= policy.max_attempts:
        return Park("max_attempts", code)
    age = message.age(now)
    if age is not None:
        if policy.max_age_seconds is not None and age + delay > policy.max_age_seconds:
            return Park("max_age", code)
        if (
            retention_seconds is not None
            and retention_seconds - age < delay + EXPIRY_MARGIN_SECONDS
        ):
            return Park("expiring", code)
    return Retry(delay, code)


def visibility_left(received_at: float, now: float) -> int:
    """Whole seconds of visibility SQS still accepts for a message received at `received_at`
    (12 h from the receive, a second of margin kept); monotonic times."""
    return math.floor(VISIBILITY_LIMIT_SECONDS - (now - received_at) - 1)


def visibility_for(delay: float, received_at: float, now: float) -> int:
    """A visibility timeout for `delay`, within what SQS accepts for this receive."""
    return max(0, min(math.ceil(delay), visibility_left(received_at, now)))


def failure_pause(failures: int, first: float, ceiling: float, rng: random.Random) -> float:
    """How long to wait after `failures` failures in a row of a call that is simply made
    again (a receive, resolving a queue at boot): doubling from `first` up to `ceiling`, with
    equal jitter, so queues and replicas that failed together do not retry in lockstep."""
    top = min(ceiling, first * 2.0 ** max(0, failures - 1))
    return top / 2 + rng.uniform(0, top / 2)
