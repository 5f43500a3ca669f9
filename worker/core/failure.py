"""What a DLQ message says about its failure, by shape (pure; aws-facts.md, "What a DLQ
message looks like, by source").

The shape is detected by signature: system attributes, then message attributes, then body
keys. SNS envelopes are unwrapped recursively. An unknown shape is an opaque body, never
guessed at. The payload to replay is kept byte for byte as the target received it: for an
invocation record it is the raw text of `requestPayload`, not a re-serialisation.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

from worker.core.envelope import DlqMessage
from worker.core.jsontext import loads

_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"
STREAM_KEYS = ("KinesisBatchInfo", "DDBStreamBatchInfo", "KafkaBatchInfo")
EVENTBRIDGE_ATTRIBUTES = ("RULE_ARN", "TARGET_ARN", "ERROR_CODE")
LAMBDA_DLQ_ATTRIBUTES = ("RequestID", "ErrorCode", "ErrorMessage")
MAX_DEPTH = 8
SFN_STATUS_CHANGE = "Step Functions Execution Status Change"
SFN_REDRIVABLE = ("FAILED", "TIMED_OUT", "ABORTED")
# arn:PARTITION:states:REGION:ACCOUNT:execution:MACHINE:NAME (a Standard execution)
_EXECUTION = re.compile(
    r"arn:(aws[a-z-]*):states:([a-z0-9-]+):(\d{12}):execution:([^:/\s]+):[^:/\s]+"
)


@dataclass(frozen=True)
class FailedEvent:
    shape: str  # sqs_redrive, lambda_dlq, lambda_destination, stream_batch, eventbridge_dlq,
    #             sns_envelope, sfn_execution, opaque
    payload: str  # what to replay, as the target originally received it (sfn_execution:
    #               the execution to redrive)
    target_arn: str | None = None  # the target the message itself names, if any
    error: str | None = None  # the original error, as the producer reported it
    first_failed_at: float | None = None  # epoch seconds
    replayable: bool = True
    via: tuple[str, ...] = ()  # envelopes unwrapped on the way (outermost first)
    # What the producer recorded of the failure, for the message view's `error`: Lambda's
    # ErrorCode / ErrorMessage, EventBridge's ERROR_CODE / ERROR_MESSAGE, an invocation
    # record's responsePayload.errorType / errorMessage (else its condition).
    error_code: str | None = None
    error_message: str | None = None
    event_id: str | None = None  # an EventBridge event's own id (sfn_execution)


def raw_member(text: str, key: str) -> str | None:
    """The raw text of a top-level member of a JSON object, or None."""
    index = _skip(text, 0)
    if index >= len(text) or text[index] != "{":
        return None
    index = _skip(text, index + 1)
    while index < len(text) and text[index] == '"':
        name, index = _DECODER.raw_decode(text, index)
        index = _skip(text, index)
        if text[index : index + 1] != ":":
            return None
        start = _skip(text, index + 1)
        _, end = _DECODER.raw_decode(text, start)
        if name == key:
            return text[start:end]
        index = _skip(text, end)
        if text[index : index + 1] != ",":
            return None
        index = _skip(text, index + 1)
    return None


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def _string_attribute(message: DlqMessage, name: str) -> str | None:
    value = message.attributes.get(name, {}).get("StringValue")
    return str(value) if value is not None else None


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _json_object(body: str) -> dict[str, Any] | None:
    if not body.lstrip().startswith("{"):
        return None
    try:
        data = loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


_UNPARSED: Any = object()


def parse_failure(message: DlqMessage, data: Any = _UNPARSED) -> FailedEvent:
    """`data`: the body already parsed as JSON (None when it is not JSON), if the caller has
    it: a body is parsed once."""
    if message.source_arn:
        return FailedEvent("sqs_redrive", message.body, target_arn=message.source_arn)
    if all(name in message.attributes for name in EVENTBRIDGE_ATTRIBUTES):
        code = _string_attribute(message, "ERROR_CODE")
        return FailedEvent(
            "eventbridge_dlq",
            message.body,
            target_arn=_string_attribute(message, "TARGET_ARN"),
            error=code,
            error_code=code,
            error_message=_string_attribute(message, "ERROR_MESSAGE"),
        )
    if all(name in message.attributes for name in LAMBDA_DLQ_ATTRIBUTES):
        text = _string_attribute(message, "ErrorMessage")
        return FailedEvent(
            "lambda_dlq",
            message.body,
            error=text,
            error_code=_string_attribute(message, "ErrorCode"),
            error_message=text,
        )
    return parse_body(message.body, message.sent_at, data=data)


def parse_body(
    body: str, sent_at: float | None = None, depth: int = 0, data: Any = _UNPARSED
) -> FailedEvent:
    """A body's shape, unwrapping SNS envelopes (they nest)."""
    if data is _UNPARSED:
        data = _json_object(body) if depth < MAX_DEPTH else None
    elif not isinstance(data, dict):
        data = None
    if data is None:
        return FailedEvent("opaque", body, first_failed_at=sent_at)
    context = data.get("requestContext")
    if isinstance(context, dict) and "functionArn" in context:
        return _invocation_record(body, data, context)
    if data.get("source") == "aws.states" and data.get("detail-type") == SFN_STATUS_CHANGE:
        return _execution_status(body, data, sent_at)
    if data.get("Type") == "Notification" and "TopicArn" in data and "Message" in data:
        inner = parse_body(str(data["Message"]), sent_at, depth + 1)
        if inner.shape == "opaque":
            subscription = _subscription(data.get("UnsubscribeURL"))
            return FailedEvent(
                "sns_envelope",
                str(data["Message"]),
                target_arn=subscription,
                first_failed_at=_timestamp(data.get("Timestamp")) or sent_at,
                via=("sns",),
            )
        return dataclasses.replace(inner, via=("sns", *inner.via))
    return FailedEvent("opaque", body, first_failed_at=sent_at)


def _invocation_record(body: str, data: dict[str, Any], context: dict[str, Any]) -> FailedEvent:
    response = data.get("responseContext")
    response = response if isinstance(response, dict) else {}
    error = response.get("functionError") or context.get("condition")
    first = _timestamp(data.get("timestamp"))
    target = str(context["functionArn"])
    answer = data.get("responsePayload")
    answer = answer if isinstance(answer, dict) else {}
    condition = context.get("condition")
    code = _text(answer.get("errorType")) or _text(condition)
    text = _text(answer.get("errorMessage")) or _text(condition)
    shape, replayable = "lambda_destination", True
    payload = raw_member(body, "requestPayload")
    if any(key in data for key in STREAM_KEYS):
        # Pointers only (shard, sequence range): the data must be re-read from the stream.
        shape, payload, replayable = "stream_batch", body, False
    elif payload is None:  # Lambda drops the payload when the record would be too large
        payload, replayable = body, False
    return FailedEvent(
        shape,
        payload,
        target,
        error,
        first,
        replayable=replayable,
        error_code=code,
        error_message=text,
    )


def machine_of(execution_arn: str) -> str | None:
    """The state machine a Standard execution ARN belongs to, or None when it is not one."""
    match = _EXECUTION.fullmatch(execution_arn)
    if match is None:
        return None
    partition, region, account, machine = match.groups()
    return f"arn:{partition}:states:{region}:{account}:stateMachine:{machine}"


def _execution_status(body: str, data: dict[str, Any], sent_at: float | None) -> FailedEvent:
    """EventBridge's "Step Functions Execution Status Change", routed to a DLQ by a rule: a
    FAILED, TIMED_OUT or ABORTED execution to redrive. The machine is read from the execution
    ARN itself (what is redriven is what `allow` is checked against)."""
    detail = data.get("detail")
    detail = detail if isinstance(detail, dict) else {}
    execution = _text(detail.get("executionArn"))
    machine = machine_of(execution) if execution else None
    stopped = detail.get("stopDate")
    return FailedEvent(
        "sfn_execution",
        execution or body,
        machine,
        _text(detail.get("error")) or _text(detail.get("status")),
        stopped / 1000 if isinstance(stopped, int | float) else sent_at,
        replayable=machine is not None and detail.get("status") in SFN_REDRIVABLE,
        error_code=_text(detail.get("error")),
        error_message=_text(detail.get("cause")),
        event_id=_text(data.get("id")),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _subscription(url: Any) -> str | None:
    if not isinstance(url, str):
        return None
    try:
        values = parse_qs(urlparse(url).query).get("SubscriptionArn")
    except ValueError:  # not a URL at all ("http://[x": an unclosed IPv6 host)
        return None
    return values[0] if values else None
