"""Backoff maths and retry decisions: pure, table-driven, seeded."""

from __future__ import annotations

import random

import pytest

from worker.core.envelope import DlqMessage, parse_message
from worker.core.errors import DeliveryError, ErrorKind
from worker.core.outcomes import Park, Retry
from worker.core.policy import attempt_number, backoff_delay, base_delay, gate, on_failure
from worker.settings import BackoffSettings, PolicySettings


def backoff(**kw: object) -> BackoffSettings:
    return BackoffSettings(**{"initial_seconds": 10, "multiplier": 2, "max_seconds": 100, **kw})


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (60, 100), (10_000, 100)],
)
def test_base_delay_grows_exponentially_and_caps(attempt, expected):
    assert base_delay(attempt, backoff()) == expected


def test_multiplier_one_is_constant():
    assert [base_delay(a, backoff(multiplier=1)) for a in (1, 5, 50)] == [10, 10, 10]


@pytest.mark.parametrize(
    ("jitter", "low", "high"),
    [("none", 40, 40), ("full", 0, 40), ("equal", 20, 40), ("decorrelated", 10, 60)],
)
def test_jitter_stays_within_its_bounds(jitter, low, high):
    rng = random.Random(1)
    delays = [backoff_delay(3, backoff(jitter=jitter), rng) for _ in range(2000)]
    assert min(delays) >= low
    assert max(delays) <= high
    if jitter != "none":
        assert max(delays) - min(delays) > (high - low) * 0.8, "spreads over the range"


def test_jitter_is_repeatable_with_a_seed():
    a = [backoff_delay(2, backoff(), random.Random(5)) for _ in range(3)]
    b = [backoff_delay(2, backoff(), random.Random(5)) for _ in range(3)]
    assert a == b


def _message(**kw: object) -> DlqMessage:
    return DlqMessage(**{"message_id": "m", "receipt_handle": "r", "body": "b", **kw})


@pytest.mark.parametrize(
    ("receive_count", "carried", "arrived_with", "expected"),
    [(1, 0, 0, 1), (3, 0, 0, 3), (4, 0, 3, 1), (5, 0, 3, 2), (2, 2, 1, 3), (1, 0, 3, 1)],
)
def test_attempt_number(receive_count, carried, arrived_with, expected):
    message = _message(receive_count=receive_count, carried_attempts=carried)
    assert attempt_number(message, arrived_with) == expected


def test_garbage_attempt_marker_counts_as_none():
    raw = {
        "MessageId": "m",
        "ReceiptHandle": "r",
        "Body": "b",
        "Attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1700000000000"},
        "MessageAttributes": {"retry-worker.attempt": {"DataType": "Number", "StringValue": "x"}},
    }
    message = parse_message(raw)
    assert (message.carried_attempts, message.marker_invalid) == (0, True)
    assert message.receive_count == 2
    assert message.sent_at == 1_700_000_000


POLICY = PolicySettings(
    max_attempts=3,
    max_age_seconds=1000,
    backoff=backoff(jitter="none"),
    retry_on=("ValidationException",),
    park_on=("Doomed",),
)


@pytest.mark.parametrize(
    ("attempt", "age", "expected"),
    [
        (1, 0, None),
        (3, 999, None),
        (4, 0, Park("max_attempts", "max_attempts_exceeded")),
        (1, 1001, Park("max_age", "max_age_exceeded")),
    ],
)
def test_gate(attempt, age, expected):
    assert gate(_message(sent_at=5000 - age), attempt, POLICY, now=5000) == expected


@pytest.mark.parametrize(
    ("kind", "code", "attempt", "age", "expected"),
    [
        (ErrorKind.RETRYABLE, "ServiceException", 1, 0, Retry(10, "ServiceException")),
        (ErrorKind.UNKNOWN, "Weird", 2, 0, Retry(20, "Weird")),
        (
            ErrorKind.THROTTLED,
            "TooManyRequestsException",
            1,
            0,
            Retry(10, "TooManyRequestsException"),
        ),
        (ErrorKind.RETRYABLE, "ServiceException", 3, 0, Park("max_attempts", "ServiceException")),
        (
            ErrorKind.PERMANENT,
            "AccessDeniedException",
            1,
            0,
            Park("permanent_error", "AccessDeniedException"),
        ),
        (ErrorKind.PERMANENT, "ValidationException", 1, 0, Retry(10, "ValidationException")),
        (ErrorKind.RETRYABLE, "Doomed", 1, 0, Park("permanent_error", "Doomed")),
        (ErrorKind.RETRYABLE, "ServiceException", 2, 990, Park("max_age", "ServiceException")),
    ],
)
def test_on_failure(kind, code, attempt, age, expected):
    error = DeliveryError(kind, code)
    message = _message(sent_at=5000 - age)
    assert on_failure(error, attempt, message, POLICY, 5000, random.Random(0)) == expected


def test_retry_after_hint_raises_the_delay_within_the_cap():
    error = DeliveryError(ErrorKind.THROTTLED, "TooManyRequestsException", retry_after=55)
    assert on_failure(error, 1, _message(), POLICY, 0, random.Random(0)) == Retry(
        55, "TooManyRequestsException"
    )
    error = DeliveryError(ErrorKind.THROTTLED, "TooManyRequestsException", retry_after=5000)
    assert on_failure(error, 1, _message(), POLICY, 0, random.Random(0)).delay == 100


@pytest.mark.parametrize(
    ("age", "retention", "expected"),
    [
        (0, 1000, Retry(10, "ServiceException")),  # 1000 s left > 10 s backoff + 60 s margin
        (930, 1000, Retry(10, "ServiceException")),  # 70 s left: just enough
        (931, 1000, Park("expiring", "ServiceException")),  # 69 s left < 10 s + 60 s margin
        (0, None, Retry(10, "ServiceException")),
    ],
)
def test_a_message_that_would_expire_before_its_next_try_is_parked(age, retention, expected):
    policy = PolicySettings(max_attempts=5, backoff=backoff(jitter="none"))
    error = DeliveryError(ErrorKind.RETRYABLE, "ServiceException")
    message = _message(sent_at=5000 - age)
    assert on_failure(error, 1, message, policy, 5000, random.Random(0), retention) == expected
