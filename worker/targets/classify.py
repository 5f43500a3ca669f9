"""Classify AWS call failures into the error vocabulary, once, at the adapter edge."""

from __future__ import annotations

from worker.aws.sqs import error_code
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
        kind_of(code, _status(exc)), code, str(exc)[:300], retry_after=_retry_after(exc)
    )
