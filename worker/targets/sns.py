"""SNS target: PublishBatch to a topic, in requests of at most 10 entries and 256 KiB, every
`Failed` entry read.

Body and message attributes are kept, and `retry-worker.idempotency-key` is added when there
is room; FIFO topics get the message group and a deduplication id from the idempotency key and
the DLQ message id, and a request keeps the order the messages were received in. A message
over 256 KiB (body and attributes) is parked `too_large`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.aws.clients import Client
from worker.aws.errors import kind_of
from worker.aws.sqs import copy_attributes
from worker.aws.trace import traced
from worker.core.errors import DeliveryError, ErrorKind
from worker.core.limits import SNS_MAX_BATCH_BYTES, SNS_MAX_MESSAGE_BYTES, sns_entry_size
from worker.settings import SnsTarget
from worker.targets.base import (
    HEADER_TRACE_LIMIT,
    Delivery,
    HandOff,
    Result,
    deliver_batched,
    fifo_fields,
    key_attribute,
    short_name,
    too_large,
    trace_of,
)


def publish_entry(entry_id: str, delivery: Delivery, *, fifo: bool) -> dict[str, Any]:
    message = delivery.message
    entry: dict[str, Any] = {"Id": entry_id, "Message": delivery.body}
    attributes = copy_attributes(message.foreign_attributes())
    if attributes:
        entry["MessageAttributes"] = attributes
    size = sns_entry_size(entry)
    if size > SNS_MAX_MESSAGE_BYTES:
        raise too_large(size, SNS_MAX_MESSAGE_BYTES, "SNS message")
    with_key = key_attribute(delivery, attributes, size, SNS_MAX_MESSAGE_BYTES)
    if with_key is not attributes:
        entry["MessageAttributes"] = copy_attributes(with_key)
    return {**entry, **fifo_fields(delivery)} if fifo else entry


class SnsPublisher(HandOff):
    service = "sns"
    operation = "PublishBatch"
    one_per_call = False

    def __init__(self, client: Client, settings: SnsTarget) -> None:
        self._client = client
        self._topic = settings.topic_arn
        self._fifo = settings.topic_arn.endswith(".fifo")
        self.name = short_name(settings.topic_arn)
        self.hands_off = True

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        # PublishBatch takes one trace, as the X-Amzn-Trace-Id header: messages are published
        # together only with the same trace (or none), in the order received.
        traces = [trace_of(delivery, HEADER_TRACE_LIMIT) for delivery in batch]

        def build(index: int, delivery: Delivery) -> dict[str, Any]:
            return publish_entry(str(index), delivery, fifo=self._fifo)

        async def publish(entries: list[dict[str, Any]]) -> dict[int, DeliveryError]:
            with traced(traces[int(entries[0]["Id"])]):
                return await self._publish(entries)

        return await deliver_batched(
            batch,
            build,
            publish,
            size_of=sns_entry_size,
            max_bytes=SNS_MAX_BATCH_BYTES,
            together=traces.__getitem__,
        )

    async def _publish(self, entries: list[dict[str, Any]]) -> dict[int, DeliveryError]:
        response = await self._client.publish_batch(
            TopicArn=self._topic, PublishBatchRequestEntries=entries
        )
        position = {entry["Id"]: i for i, entry in enumerate(entries)}
        failed = {}
        for failure in response.get("Failed", []):
            code = failure.get("Code", "Unknown")
            kind = ErrorKind.PERMANENT if failure.get("SenderFault") else kind_of(code)
            failed[position[failure["Id"]]] = DeliveryError(kind, code, failure.get("Message", ""))
        return failed
