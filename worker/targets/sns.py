"""SNS target: PublishBatch to a topic, up to 10 entries a call, every `Failed` entry read.

Body and message attributes are kept; FIFO topics get the message group and a deterministic
deduplication id per (message, attempt). Messages over 256 KB are parked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.aws.clients import Client
from worker.aws.errors import kind_of
from worker.aws.sqs import copy_attributes
from worker.core.errors import DeliveryError, ErrorKind
from worker.settings import SnsTarget
from worker.targets.base import Delivery, HandOff, Result, deliver_batched, fifo_fields, short_name

MAX_MESSAGE_BYTES = 256 * 1024
BATCH = 10


def publish_entry(entry_id: str, delivery: Delivery, *, fifo: bool) -> dict[str, Any]:
    message = delivery.message
    if len(message.body.encode("utf-8")) > MAX_MESSAGE_BYTES:
        raise DeliveryError(
            ErrorKind.PERMANENT, "PayloadTooLarge", "message over 256 KB", park_reason="too_large"
        )
    entry: dict[str, Any] = {"Id": entry_id, "Message": message.body}
    attributes = copy_attributes(message.foreign_attributes())
    if attributes:
        entry["MessageAttributes"] = attributes
    return {**entry, **fifo_fields(delivery)} if fifo else entry


class SnsPublisher(HandOff):
    service = "sns"
    operation = "PublishBatch"

    def __init__(self, client: Client, settings: SnsTarget) -> None:
        self._client = client
        self._topic = settings.topic_arn
        self._fifo = settings.topic_arn.endswith(".fifo")
        self.name = short_name(settings.topic_arn)
        self.hands_off = True

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        def build(index: int, delivery: Delivery) -> dict[str, Any]:
            return publish_entry(str(index), delivery, fifo=self._fifo)

        return await deliver_batched(batch, build, self._publish, BATCH)

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
