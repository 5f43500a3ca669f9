"""The message view (SPEC.md, Decisions): what expressions and hooks see of one message.

`{queue, message_id, attempt, receive_count, age_seconds, group_id, source_arn, body, text,
dlq_body, attributes, error}`. Built once per message, plain JSON values only (a Lambda hook
receives it as its input).
"""

from __future__ import annotations

import base64
from typing import Any

from worker.core.envelope import DlqMessage
from worker.core.failure import FailedEvent, parse_failure
from worker.core.jsontext import loads

View = dict[str, Any]


def parsed(text: str) -> Any:
    """`text` as JSON, or None when it is not JSON."""
    try:
        return loads(text)
    except ValueError:
        return None


def string_attributes(message: DlqMessage) -> dict[str, str]:
    """Name → string value (binary as base64); our own markers left out."""
    out: dict[str, str] = {}
    for name, attribute in message.foreign_attributes().items():
        if "StringValue" in attribute:
            out[name] = str(attribute["StringValue"])
        elif "BinaryValue" in attribute:
            out[name] = base64.b64encode(bytes(attribute["BinaryValue"])).decode("ascii")
    return out


def recorded_error(event: FailedEvent) -> dict[str, str | None] | None:
    if event.error_code is None and event.error_message is None:
        return None
    return {"code": event.error_code, "message": event.error_message}


def build_view(queue: str, message: DlqMessage, attempt: int, now: float, *, unwrap: bool) -> View:
    """`unwrap`: the queue's target is `kind: auto`, which delivers the payload inside the
    DLQ message's envelope; `text` is that payload."""
    dlq_body = parsed(message.body)
    event = parse_failure(message, dlq_body)
    text = event.payload if unwrap else message.body
    age = message.age(now)
    return {
        "queue": queue,
        "message_id": message.message_id,
        "attempt": attempt,
        "receive_count": message.receive_count,
        "age_seconds": None if age is None else round(age, 3),
        "group_id": message.group_id,
        "source_arn": message.source_arn,
        "body": dlq_body if text is message.body else parsed(text),
        "text": text,
        "dlq_body": dlq_body,
        "attributes": string_attributes(message),
        "error": recorded_error(event),
    }


def with_payload(view: View, text: str) -> View:
    """The view a later step sees once the transform changed the payload."""
    return {**view, "text": text, "body": parsed(text)}
