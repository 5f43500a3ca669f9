"""A received DLQ message, parsed once into a typed value (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from worker.core.limits import message_size

ATTEMPT_ATTRIBUTE = "retry-worker.attempt"
KEY_ATTRIBUTE = "retry-worker.idempotency-key"
# The queue that dead-lettered a message, on a copy we sent back to its DLQ (a replay): SQS sets
# `DeadLetterQueueSourceArn` only when it dead-letters a message itself.
SOURCE_ATTRIBUTE = "retry-worker.source-arn"
OWN_PREFIX = "retry-worker."


@dataclass(frozen=True)
class DlqMessage:
    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    receive_count: int = 1
    sent_at: float | None = None  # epoch seconds, from SentTimestamp
    source_arn: str | None = None  # DeadLetterQueueSourceArn: SQS's own word
    # The source our marker or the parking metadata names (a copy we sent back to the DLQ, a
    # replay): anyone who can send to the queue can write it, so it is used only where it is
    # one of the DLQ's redrive sources (`DlqFacts.verified` makes it the `source_arn` then).
    carried_source: str | None = None
    trace_header: str | None = None  # AWSTraceHeader
    group_id: str | None = None  # MessageGroupId (FIFO)
    carried_attempts: int = 0  # from our `retry-worker.attempt` marker
    marker_invalid: bool = False  # the marker was present but not a number

    def age(self, now: float) -> float | None:
        return None if self.sent_at is None else max(0.0, now - self.sent_at)

    @property
    def carried_key(self) -> str | None:
        """The idempotency key an earlier delivery of ours gave this message (it came back
        through a queue that dead-lettered it again)."""
        value = self.attributes.get(KEY_ATTRIBUTE, {}).get("StringValue")
        return str(value) if value else None

    def foreign_attributes(self) -> dict[str, dict[str, Any]]:
        """The message's attributes without our own markers (do not modify)."""
        return self._foreign

    @cached_property
    def _foreign(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.attributes.items() if not k.startswith(OWN_PREFIX)}

    @cached_property
    def foreign_size(self) -> int:
        """Body and foreign attributes, as SQS counts a message (computed once)."""
        return message_size(self.body, self._foreign)


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _carried(attributes: dict[str, dict[str, Any]]) -> tuple[int, bool]:
    marker = attributes.get(ATTEMPT_ATTRIBUTE)
    if marker is None:
        return 0, False
    value = _int(marker.get("StringValue"), -1)
    if value < 0:
        return 0, True
    return value, False


def parse_message(raw: dict[str, Any]) -> DlqMessage:
    """From one entry of a ReceiveMessage response (all attributes requested)."""
    system = raw.get("Attributes", {})
    attributes = raw.get("MessageAttributes", {})
    sent = system.get("SentTimestamp")
    carried, invalid = _carried(attributes)
    marker = attributes.get(SOURCE_ATTRIBUTE, {}).get("StringValue")
    return DlqMessage(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        body=raw.get("Body", ""),
        attributes=attributes,
        receive_count=max(1, _int(system.get("ApproximateReceiveCount"), 1)),
        sent_at=_int(sent, 0) / 1000 if sent is not None else None,
        source_arn=system.get("DeadLetterQueueSourceArn"),
        carried_source=str(marker) if marker else None,
        trace_header=system.get("AWSTraceHeader"),
        group_id=system.get("MessageGroupId"),
        carried_attempts=carried,
        marker_invalid=invalid,
    )
