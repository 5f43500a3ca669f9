"""Classify AWS call failures into the error vocabulary, once, at the adapter edge.

Used by every target and by the SQS adapter; metric labels use `metric_code`, a bounded set.
"""

from __future__ import annotations

from worker.core.errors import DeliveryError, ErrorKind

THROTTLE_CODES = frozenset(
    {
        "TooManyRequestsException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "ExecutionLimitExceeded",
        "EC2ThrottledException",
        "KMSThrottlingException",
        "ProvisionedThroughputExceededException",
    }
)
PERMANENT_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "ValidationException",
        "ValidationError",
        "InvalidParameterValueException",
        "InvalidParameterValue",
        "InvalidParameterException",
        "InvalidParameter",
        "InvalidRequestContentException",
        "RequestTooLargeException",
        "ResourceNotFoundException",
        "NotFound",
        "NotFoundException",
        "StateMachineDoesNotExist",
        "StateMachineDeleting",
        "InvalidArn",
        "InvalidName",
        "InvalidExecutionInput",
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
        "InvalidMessageContents",
        "UnsupportedMediaTypeException",
        "UnrecognizedClientException",
        "MissingParameter",
        "KMSDisabledException",
        "KMSNotFoundException",
        "KMSAccessDeniedException",
    }
)
RETRYABLE_CODES = frozenset(
    {
        "ServiceException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "ResourceConflictException",
        "ResourceNotReadyException",
        "EC2UnexpectedException",
        "ENILimitReachedException",
        "SnapStartNotReadyException",
        # the network, as botocore and aiohttp name it
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ServerDisconnectedError",
        "ClientConnectorError",
        "ClientOSError",
        "TimeoutError",
    }
)


# Why a permanent error is permanent, for the parking reason.
PARK_REASONS = {
    "RequestTooLargeException": "too_large",
    "InvalidRequestContentException": "unparseable",
    "InvalidExecutionInput": "unparseable",
    "InvalidMessageContents": "unparseable",
    "ResourceNotFoundException": "target_not_found",
    "StateMachineDoesNotExist": "target_not_found",
    "QueueDoesNotExist": "target_not_found",
    "AWS.SimpleQueueService.NonExistentQueue": "target_not_found",
    "AccessDeniedException": "access_denied",
    "AccessDenied": "access_denied",
}
# Codes of our own, raised at the adapter edge.
OWN_CODES = frozenset(
    {
        "CircuitOpen",
        "PayloadTooLarge",
        "MissingMessageGroupId",
        "SourceQueueUnknown",
        "InternalError",
        "ExecutionFailed",
        "ExecutionTimedOut",
        "ExecutionAborted",
        "FunctionError.Handled",
        "FunctionError.Unhandled",
        "HookTimeout",
        "Deferred",
        "Hook",
    }
)
KNOWN_CODES = THROTTLE_CODES | PERMANENT_CODES | RETRYABLE_CODES | OWN_CODES


# Codes of a family named after the user's own code or configuration (`HookError.ValueError`,
# `Rule.2`): the family is the label.
FAMILIES = ("HookError", "RuleFailed", "TransformFailed", "Rule")


def metric_code(code: str) -> str:
    """An error code for a metric label: from a bounded set, anything else is `Other`."""
    if code in KNOWN_CODES:
        return code
    family = code.split(".", 1)[0]
    return family if family in FAMILIES else "Other"


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore exception, or its class name (network errors)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(exc).__name__


def error_message(exc: BaseException) -> str:
    """What an AWS exception said (its `Error.Message`), else the exception as text."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        message = response.get("Error", {}).get("Message")
        if message:
            return str(message)
    return str(exc)


def _status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status
    return 0


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    try:
        return float(response["retryAfterSeconds"])
    except (KeyError, TypeError, ValueError):
        return None


def kind_of(code: str, status: int = 0) -> ErrorKind:
    if code in THROTTLE_CODES or status == 429:
        return ErrorKind.THROTTLED
    if code in PERMANENT_CODES:
        return ErrorKind.PERMANENT
    if code in RETRYABLE_CODES or status >= 500:
        return ErrorKind.RETRYABLE
    return ErrorKind.UNKNOWN


def classify(exc: BaseException) -> DeliveryError:
    """A DeliveryError for any exception raised by a target call."""
    if isinstance(exc, DeliveryError):
        return exc
    code = error_code(exc)
    return DeliveryError(
        kind_of(code, _status(exc)),
        code,
        error_message(exc),
        retry_after=_retry_after(exc),
        park_reason=PARK_REASONS.get(code),
    )


def innermost(exc: BaseException) -> BaseException:
    """The one exception inside task groups' ExceptionGroups (a group of several stays)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def first_failure(exc: BaseException) -> BaseException:
    """The first exception inside task groups' ExceptionGroups: tasks failing together (chunks
    moving at once) mostly fail for one reason, and the first one says it."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def said(exc: BaseException) -> str:
    """An exception as a page or an audit line says it: its code and message."""
    exc = first_failure(exc)
    return f"{error_code(exc)}: {exc}"
