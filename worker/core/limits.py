"""Service size limits, and request sizes computed the way AWS computes them (pure).

SQS and SNS count a message as its body plus, for every message attribute, the UTF-8 bytes of
its name, its data type and its value (a binary value by its length); system attributes such as
`AWSTraceHeader` do not count. EventBridge counts an entry as the UTF-8 bytes of its `Source`,
`DetailType`, `Detail` and each `Resources` string, plus 14 bytes for a `Time`. A batch request
is limited by the sum of its entries as well as by their count (aws-facts.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

KIB = 1024
MIB = 1024 * KIB

SQS_MAX_MESSAGE_BYTES = MIB  # the service limit; each queue has its own MaximumMessageSize
SQS_MAX_BATCH_BYTES = MIB
SNS_MAX_MESSAGE_BYTES = 256 * KIB
SNS_MAX_BATCH_BYTES = 256 * KIB
EVENTS_MAX_ENTRY_BYTES = 256 * KIB
EVENTS_MAX_BATCH_BYTES = 256 * KIB
SFN_MAX_INPUT_BYTES = 256 * KIB
LAMBDA_MAX_ASYNC_BYTES = MIB
LAMBDA_MAX_SYNC_BYTES = 6 * MIB
MAX_BATCH_ENTRIES = 10

T = TypeVar("T")


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def attributes_size(attributes: Mapping[str, Mapping[str, Any]]) -> int:
    """Message attributes as SQS and SNS count them: name + type + value."""
    total = 0
    for name, attr in attributes.items():
        total += utf8_len(name) + utf8_len(str(attr.get("DataType", "")))
        if "StringValue" in attr:
            total += utf8_len(str(attr["StringValue"]))
        if "BinaryValue" in attr:
            total += len(bytes(attr["BinaryValue"]))
    return total


def message_size(body: str, attributes: Mapping[str, Mapping[str, Any]]) -> int:
    """One SQS message (or SNS publish): body plus attributes."""
    return utf8_len(body) + attributes_size(attributes)


def sqs_entry_size(entry: Mapping[str, Any]) -> int:
    """A SendMessageBatch entry."""
    return message_size(entry["MessageBody"], entry.get("MessageAttributes", {}))


def sns_entry_size(entry: Mapping[str, Any]) -> int:
    """A PublishBatch entry."""
    return message_size(entry["Message"], entry.get("MessageAttributes", {}))


def events_entry_size(entry: Mapping[str, Any]) -> int:
    """A PutEvents entry, by EventBridge's own rule."""
    size = 14 if entry.get("Time") is not None else 0
    for key in ("Source", "DetailType", "Detail"):
        if entry.get(key) is not None:
            size += utf8_len(str(entry[key]))
    return size + sum(utf8_len(str(r)) for r in entry.get("Resources", ()))


def pack(
    items: Sequence[T],
    size_of: Callable[[T], int],
    *,
    max_bytes: int,
    max_count: int = MAX_BATCH_ENTRIES,
    key: Callable[[T], object] | None = None,
) -> list[list[T]]:
    """Cut `items` into batch requests, in order, each within `max_count` entries and
    `max_bytes` in total, and (with `key`) a new request wherever the key changes: a request
    carries what its items share. An item larger than `max_bytes` goes alone (its request
    fails for that item only; callers check single items against the limit first)."""
    batches: list[list[T]] = []
    current: list[T] = []
    used = 0
    for item in items:
        size = size_of(item)
        apart = key is not None and current and key(item) != key(current[-1])
        if current and (len(current) >= max_count or used + size > max_bytes or apart):
            batches.append(current)
            current, used = [], 0
        current.append(item)
        used += size
    if current:
        batches.append(current)
    return batches
