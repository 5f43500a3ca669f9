"""SQS target: SendMessageBatch to a named queue or back to the queue that dead-lettered it.

Body, every attribute (String, Number, Binary) and AWSTraceHeader are kept; a FIFO group is
kept and the dedup id is a hash of the idempotency key and the DLQ message id. The
`retry-worker.attempt` marker travels with the message, so a source queue that dead-letters it
again does not start the count afresh (aws-facts.md, Loops); then, room allowing,
`retry-worker.idempotency-key`, for the consumer to drop a duplicate (and for the next cycle to
keep the key).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from worker.aws.clients import Client
from worker.aws.errors import classify, kind_of
from worker.aws.sqs import RedriveSource, SqsQueue, message_entry, resolve_queue_url
from worker.core.envelope import ATTEMPT_ATTRIBUTE, DlqMessage
from worker.core.errors import DeliveryError, ErrorKind
from worker.core.limits import SQS_MAX_MESSAGE_BYTES
from worker.core.parking import MAX_ATTRIBUTES
from worker.settings import SqsTarget
from worker.targets.base import (
    Delivery,
    Result,
    fifo_fields,
    key_attribute,
    short_name,
    too_large,
)

# The marker attribute: its name, "Number" and up to 10 digits.
MARKER_BYTES = len(ATTEMPT_ATTRIBUTE) + len("Number") + 10


def _marker(attempt: int) -> dict[str, dict[str, str]]:
    return {ATTEMPT_ATTRIBUTE: {"DataType": "Number", "StringValue": str(attempt)}}


def _carries_marker(
    attributes: dict[str, Any], size: int, limit: int = SQS_MAX_MESSAGE_BYTES
) -> bool:
    """The marker travels unless the message has no attribute slot or no byte left for it."""
    return len(attributes) < MAX_ATTRIBUTES and size + MARKER_BYTES <= limit


def send_entry(
    entry_id: str, delivery: Delivery, *, fifo: bool, limit: int = SQS_MAX_MESSAGE_BYTES
) -> dict[str, Any]:
    """A SendMessageBatch entry within the destination's `limit` (MaximumMessageSize), or a
    `too_large` DeliveryError."""
    message = delivery.message
    attributes = message.foreign_attributes()
    if (size := delivery.size) > limit:
        raise too_large(size, limit, "queue's MaximumMessageSize")
    if _carries_marker(attributes, size, limit):
        attributes = {**attributes, **_marker(delivery.attempt)}
        size += MARKER_BYTES
    attributes = key_attribute(delivery, attributes, size, limit)
    entry = message_entry(entry_id, delivery.body, attributes, trace_header=message.trace_header)
    return {**entry, **fifo_fields(delivery)} if fifo else entry


class SqsSender:
    service = "sqs"
    operation = "SendMessageBatch"
    one_per_call = False

    def __init__(
        self,
        client: Client,
        settings: SqsTarget,
        sources: Mapping[str, RedriveSource],
    ) -> None:
        self._client = client
        self._queue = settings.queue
        self._sources = sources  # the DLQ's redrive sources, by ARN
        # by reference (name, URL or ARN): resolved once, and each reads its size limit once
        self._queues: dict[str, SqsQueue] = {}
        self.name = short_name(settings.queue) if settings.queue else "source"
        self.hands_off = False  # the retry-worker.attempt marker travels with the message

    def loop_seen(self, message: DlqMessage) -> tuple[str, str]:
        return message.body, message.message_id

    def loops_back(self, message: DlqMessage) -> bool:
        """Only when the marker cannot travel: the message already has 10 attributes, or is
        within a few bytes of the destination's size limit (its own MaximumMessageSize once
        it is known, the service limit before)."""
        ref = self._queue or self._source(message)
        queue = self._queues.get(ref) if ref is not None else None
        limit = queue.known_max_message_bytes if queue is not None else None
        size = message.foreign_size
        return not _carries_marker(
            message.foreign_attributes(), size, limit or SQS_MAX_MESSAGE_BYTES
        )

    def _source(self, message: DlqMessage) -> str | None:
        """The queue the message goes back to: the one SQS names (or our marker, once
        `DlqFacts.verified` found it among the redrive sources), else the DLQ's only redrive
        source, unless the marker names another queue: then we know it came from elsewhere."""
        ref = message.source_arn
        if ref is None and message.carried_source is None and len(self._sources) == 1:
            ref = next(iter(self._sources.values())).url
        return ref

    async def _destination(self, message: DlqMessage) -> SqsQueue:
        ref = self._queue or self._source(message)
        if ref is None:
            carried = message.carried_source
            raise DeliveryError(
                ErrorKind.PERMANENT,
                "SourceQueueUnknown",
                f"it came from {carried}, which does not feed this DLQ"
                if carried
                else f"no DeadLetterQueueSourceArn and {len(self._sources)} redrive sources",
                park_reason="no_source",
            )
        if ref not in self._queues:
            self._queues[ref] = SqsQueue(self._client, await resolve_queue_url(self._client, ref))
        return self._queues[ref]

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        results: list[Result] = [None] * len(batch)
        groups: dict[SqsQueue, list[int]] = defaultdict(list)
        for index, delivery in enumerate(batch):
            try:
                groups[await self._destination(delivery.message)].append(index)
            except DeliveryError as exc:
                results[index] = exc
            except Exception as exc:  # noqa: BLE001 - e.g. GetQueueUrl failed
                results[index] = classify(exc)
        for queue, indexes in groups.items():
            await self._send(queue, batch, indexes, results)
        return results

    async def _send(
        self, queue: SqsQueue, batch: Sequence[Delivery], indexes: list[int], results: list[Result]
    ) -> None:
        entries = []
        limit = await queue.max_message_bytes()
        for index in indexes:
            delivery = batch[index]
            try:
                entries.append(send_entry(str(index), delivery, fifo=queue.is_fifo, limit=limit))
            except DeliveryError as exc:
                results[index] = exc
        if not entries:
            return
        _, failed = await queue.send(entries)
        for entry_id, failure in failed.items():
            kind = ErrorKind.PERMANENT if failure.sender_fault else kind_of(failure.code)
            results[int(entry_id)] = DeliveryError(kind, failure.code, failure.message)
