"""What every target offers the pipeline, and the helpers targets share (per-message calls,
batch calls, FIFO ids)."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from worker.aws.errors import classify
from worker.core.envelope import KEY_ATTRIBUTE, DlqMessage
from worker.core.errors import DeliveryError, ErrorKind
from worker.core.limits import message_size, pack
from worker.core.parking import MAX_ATTRIBUTES


@dataclass(frozen=True)
class Delivery:
    message: DlqMessage  # as received: settlement and parking use it
    attempt: int
    # The text to deliver instead of the message's own, when the queue's transform or hook
    # made one (SPEC.md, Decisions); targets read `body`.
    payload: str | None = None
    # The queue's `idempotency_key` for this message, when it has one (SPEC.md, Idempotency);
    # targets read `idempotency_key`.
    key: str | None = None
    queue: str = ""  # the logical queue name (for the target's context)

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt and every duplicate delivery of one DLQ message: the
        queue's `idempotency_key`, by default the DLQ message id."""
        if self.key is not None:
            return self.key
        return self.message.carried_key or self.message.message_id

    @property
    def body(self) -> str:
        return self.message.body if self.payload is None else self.payload

    @property
    def size(self) -> int:
        """Body and foreign attributes, as SQS counts a message."""
        if self.payload is None:
            return self.message.foreign_size
        return message_size(self.payload, self.message.foreign_attributes())


Result = DeliveryError | None  # None: the target accepted the message


class Target(Protocol):
    """A target delivers a batch and answers per message; it never raises for one message."""

    name: str  # short name for metrics and logs
    service: str  # the AWS service and operation it calls, for `aws_errors`
    operation: str
    hands_off: bool  # accepted now, may fail later and come back as a new DLQ message
    # One call per message (Lambda, Step Functions): a FIFO group is delivered one at a time.
    # Batch targets keep a group's order inside each request instead.
    one_per_call: bool

    def loops_back(self, message: DlqMessage) -> bool:
        """Whether a failure after this delivery may return as a new DLQ message that nothing
        in it ties to this one (the loop guard then watches the payload)."""
        ...

    def loop_seen(self, message: DlqMessage) -> tuple[str, str]:
        """What the loop guard counts for this message: (what comes back the same each time
        the target sends it back — the body, unless the target knows better; which one
        coming back this is — the DLQ message id, unless one event can arrive as two)."""
        ...

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]: ...


class HandOff:
    """`loops_back` for targets where it depends on the target alone."""

    hands_off: bool

    def loops_back(self, message: DlqMessage) -> bool:
        return self.hands_off

    def loop_seen(self, message: DlqMessage) -> tuple[str, str]:
        return message.body, message.message_id


Entry = dict[str, Any]
# Sends one chunk of entries; returns the failed ones by their position in the chunk.
SendChunk = Callable[[list[Entry]], Awaitable[dict[int, DeliveryError]]]


async def deliver_batched(
    batch: Sequence[Delivery],
    build: Callable[[int, Delivery], Entry],
    send: SendChunk,
    *,
    size_of: Callable[[Entry], int],
    max_bytes: int,
    together: Callable[[int], object] | None = None,
) -> list[Result]:
    """For batch APIs: build an entry per message (a DeliveryError parks just that one), send
    in requests of at most 10 entries and `max_bytes` (entry sizes by `size_of`, in order;
    with `together`, a new request wherever it changes from one message index to the next),
    and map every per-entry failure back to its message."""
    results: list[Result] = [None] * len(batch)
    ready: list[tuple[int, Entry]] = []
    for index, delivery in enumerate(batch):
        try:
            ready.append((index, build(index, delivery)))
        except DeliveryError as exc:
            results[index] = exc
    key = None if together is None else (lambda item: together(item[0]))
    for chunk in pack(ready, lambda item: size_of(item[1]), max_bytes=max_bytes, key=key):
        try:
            failed = await send([entry for _, entry in chunk])
        except Exception as exc:  # noqa: BLE001 - every entry of the call failed alike
            for index, _ in chunk:
                results[index] = classify(exc)
            continue
        for position, error in failed.items():
            results[chunk[position][0]] = error
    return results


def too_large(size: int, limit: int, what: str) -> DeliveryError:
    """A message its target can never take: parked `too_large` at once."""
    return DeliveryError(
        ErrorKind.PERMANENT,
        "PayloadTooLarge",
        f"{size} bytes, over the {what} limit of {limit}",
        park_reason="too_large",
    )


async def deliver_each(
    batch: Sequence[Delivery], one: Callable[[Delivery], Awaitable[None]]
) -> list[Result]:
    """Deliver each message with its own call, concurrently (the poller bounds concurrency)."""
    results: list[Result] = [None] * len(batch)

    async def run(index: int, delivery: Delivery) -> None:
        try:
            await one(delivery)
        except Exception as exc:  # noqa: BLE001 - classified, never lost
            results[index] = classify(exc)

    async with anyio.create_task_group() as tg:
        for index, delivery in enumerate(batch):
            tg.start_soon(run, index, delivery)
    return results


def key_hash(key: str) -> str:
    """A fixed-size stand-in for a key (64 hex characters)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


KEY_VALUE_MAX = 256  # characters of a key sent as an attribute value; longer ones are hashed


def key_attribute(
    delivery: Delivery, attributes: dict[str, Any], size: int, limit: int
) -> dict[str, Any]:
    """`attributes` with `retry-worker.idempotency-key` added when the message has room: a
    free attribute slot (10 at most) and the bytes under `limit`; otherwise as they were."""
    key = delivery.idempotency_key
    value = key if len(key) <= KEY_VALUE_MAX else key_hash(key)
    cost = len(KEY_ATTRIBUTE) + len("String") + len(value.encode("utf-8"))
    if len(attributes) >= MAX_ATTRIBUTES or size + cost > limit:
        return attributes
    return {**attributes, KEY_ATTRIBUTE: {"DataType": "String", "StringValue": value}}


def fifo_fields(delivery: Delivery) -> dict[str, str]:
    """Group and deduplication id for a FIFO queue or topic. The group is kept. The dedup id
    hashes the idempotency key *and this DLQ message's id*: the same on every receive and
    attempt of one DLQ message, so a re-send after a failed delete, a crash or a settle
    timeout is dropped by SQS or SNS (within their 5-minute window); new for a new DLQ
    message, so a message the target's consumer failed and SQS dead-lettered again — it
    carries the same key — is enqueued, not answered "successful" and dropped."""
    message = delivery.message
    if not message.group_id:
        raise DeliveryError(
            ErrorKind.PERMANENT, "MissingMessageGroupId", park_reason="missing_group_id"
        )
    return {
        "MessageGroupId": message.group_id,
        "MessageDeduplicationId": key_hash(f"{delivery.idempotency_key}\n{message.message_id}"),
    }


def trace_of(delivery: Delivery, limit: int) -> str | None:
    """The DLQ message's X-Ray trace header, if it is one the target takes (printable ASCII,
    at most `limit` characters; an HTTP header never gets a line break): an odd one goes
    unsent rather than fail the delivery."""
    trace = delivery.message.trace_header
    if not trace or len(trace) > limit or not (trace.isascii() and trace.isprintable()):
        return None
    return trace


HEADER_TRACE_LIMIT = 500  # characters of a trace sent as the X-Amzn-Trace-Id header


def short_name(ref: str) -> str:
    """A target's short name for metrics and logs: the last part of an ARN or URL."""
    tail = ref.rstrip("/").rsplit("/", 1)[-1]
    if tail.startswith("arn:"):
        parts = tail.split(":")
        # arn:aws:lambda:region:acct:function:NAME[:QUALIFIER], arn:...:stateMachine:NAME
        return ":".join(parts[6:]) if len(parts) > 6 else parts[-1]
    return tail
