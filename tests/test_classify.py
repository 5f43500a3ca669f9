"""Every failure maps once, at the adapter edge, to throttled/retryable/permanent/unknown."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from worker.aws.errors import classify, metric_code
from worker.core.errors import ErrorKind


def client_error(code: str, status: int, **extra: object) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError({**response, **extra}, "Op")


@pytest.mark.parametrize(
    ("exc", "kind", "code"),
    [
        (
            client_error("TooManyRequestsException", 429),
            ErrorKind.THROTTLED,
            "TooManyRequestsException",
        ),
        (client_error("ThrottlingException", 400), ErrorKind.THROTTLED, "ThrottlingException"),
        (client_error("RequestThrottled", 403), ErrorKind.THROTTLED, "RequestThrottled"),
        (
            client_error("ExecutionLimitExceeded", 400),
            ErrorKind.THROTTLED,
            "ExecutionLimitExceeded",
        ),
        (client_error("SlowDown", 429), ErrorKind.THROTTLED, "SlowDown"),
        (client_error("ServiceException", 500), ErrorKind.RETRYABLE, "ServiceException"),
        (client_error("InternalFailure", 500), ErrorKind.RETRYABLE, "InternalFailure"),
        (client_error("Whatever", 503), ErrorKind.RETRYABLE, "Whatever"),
        (
            client_error("ResourceConflictException", 409),
            ErrorKind.RETRYABLE,
            "ResourceConflictException",
        ),
        (
            EndpointConnectionError(endpoint_url="http://x"),
            ErrorKind.RETRYABLE,
            "EndpointConnectionError",
        ),
        (ReadTimeoutError(endpoint_url="http://x"), ErrorKind.RETRYABLE, "ReadTimeoutError"),
        (client_error("AccessDeniedException", 403), ErrorKind.PERMANENT, "AccessDeniedException"),
        (
            client_error("ResourceNotFoundException", 404),
            ErrorKind.PERMANENT,
            "ResourceNotFoundException",
        ),
        (client_error("ValidationException", 400), ErrorKind.PERMANENT, "ValidationException"),
        (
            client_error("InvalidParameterValueException", 400),
            ErrorKind.PERMANENT,
            "InvalidParameterValueException",
        ),
        (
            client_error("RequestTooLargeException", 413),
            ErrorKind.PERMANENT,
            "RequestTooLargeException",
        ),
        (
            client_error("StateMachineDoesNotExist", 400),
            ErrorKind.PERMANENT,
            "StateMachineDoesNotExist",
        ),
        (client_error("QueueDoesNotExist", 400), ErrorKind.PERMANENT, "QueueDoesNotExist"),
        (client_error("BrandNewError", 400), ErrorKind.UNKNOWN, "BrandNewError"),
        (RuntimeError("a bug"), ErrorKind.UNKNOWN, "RuntimeError"),
    ],
)
def test_mapping(exc, kind, code):
    error = classify(exc)
    assert (error.kind, error.code) == (kind, code)


def test_lambda_throttle_keeps_its_retry_after_hint():
    error = classify(client_error("TooManyRequestsException", 429, retryAfterSeconds="7"))
    assert error.retry_after == 7


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("RequestTooLargeException", "too_large"),
        ("ResourceNotFoundException", "target_not_found"),
        ("AccessDeniedException", "access_denied"),
        ("ValidationException", None),
    ],
)
def test_permanent_errors_carry_a_precise_parking_reason(code, reason):
    assert classify(client_error(code, 400)).park_reason == reason


def test_metric_labels_stay_bounded_whatever_the_codes():
    codes = [f"HookError.E{i}" for i in range(50)] + [f"Rule.{i}" for i in range(50)]
    codes += [f"req-{i}" for i in range(50)]
    assert {metric_code(c) for c in codes} == {"HookError", "Rule", "Other"}


def test_metric_labels_come_from_a_bounded_set():
    assert metric_code("ThrottlingException") == "ThrottlingException"
    assert metric_code("FunctionError.Unhandled") == "FunctionError.Unhandled"
    assert metric_code("arn:aws:... request 1234 failed") == "Other"


def test_what_a_target_said_is_kept_clean_bounded_and_its_type_on_one_line():
    from worker.core.errors import MAX_DETAIL_CHARS, DeliveryError

    said = "boom \x00\x1b[2J \ud800" + "x" * 6_000_000
    error = DeliveryError(
        ErrorKind.RETRYABLE, "FunctionError.Unhandled", said, error_type="A\nB\t C"
    )
    assert error.error_type == "A B C"
    assert error.detail.startswith("boom \ufffd\ufffd[2J \ufffdxxx")
    assert len(error.detail) == MAX_DETAIL_CHARS
    assert str(error) == f"FunctionError.Unhandled: {error.detail}"  # never the raw 6 MB
    assert DeliveryError(ErrorKind.RETRYABLE, "E", error_type=" \n ").error_type == "E"
