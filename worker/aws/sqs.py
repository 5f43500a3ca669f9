"""The SQS adapter: receive, and batch calls that read every `Failed` entry.

A batch entry that failed for a server-side reason is retried (with backoff) before it is
reported; the caller decides what a still-failed entry means (never: "deleted anyway").
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from worker.aws.clients import Client
from worker.aws.errors import error_code, kind_of
from worker.core.errors import ErrorKind
from worker.core.limits import SQS_MAX_BATCH_BYTES, SQS_MAX_MESSAGE_BYTES, pack, sqs_entry_size
from worker.settings.accounts import parse_arn

BATCH = 10
REREAD_SECONDS = 60.0  # a queue attribute that could not be read is asked for again after this
log = structlog.get_logger("worker.aws.sqs")

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class EntryFailure:
    code: str
    sender_fault: bool
    message: str = ""


def chunks(items: Sequence[Any], size: int = BATCH) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


Cut = Callable[[Sequence[dict[str, Any]]], Sequence[Sequence[dict[str, Any]]]]


def _retried(failure: EntryFailure) -> bool:
    """Whether a failed entry is worth sending again: not the request's fault, not final."""
    return not failure.sender_fault and kind_of(failure.code) is not ErrorKind.PERMANENT


async def batch_call(
    call: Callable[[list[dict[str, Any]]], Awaitable[dict[str, Any]]],
    entries: Sequence[dict[str, Any]],
    *,
    attempts: int = 3,
    sleep: Sleep = anyio.sleep,
    backoff: float = 0.2,
    cut: Cut = chunks,
) -> tuple[list[dict[str, Any]], dict[str, EntryFailure]]:
    """Run a *Batch API over entries (each with a unique `Id`), in the requests `cut` makes
    (10 entries each by default; by size too for sends).

    Returns the `Successful` results and the entries that still failed, by Id. A failed entry
    is sent again only when the failure is the server's and not final (no `SenderFault`, not a
    permanent code). A call that raised was already retried by botocore: its entries are
    reported failed at once, not retried on top.
    """
    successful: list[dict[str, Any]] = []
    failed: dict[str, EntryFailure] = {}
    pending = list(entries)
    for attempt in range(attempts):
        if attempt:
            await sleep(backoff * 2 ** (attempt - 1))
        retry: list[dict[str, Any]] = []
        by_id = {e["Id"]: e for e in pending}
        for chunk in cut(pending):
            try:
                response = await call(list(chunk))
            except Exception as exc:  # noqa: BLE001 - any failure leaves these entries pending
                code = error_code(exc)
                log.warning("batch_call_failed", error=code, entries=len(chunk))
                for entry in chunk:
                    failed[entry["Id"]] = EntryFailure(code, False, str(exc)[:200])
                continue
            for item in response.get("Failed", []):
                failure = EntryFailure(
                    item.get("Code", "Unknown"),
                    bool(item.get("SenderFault")),
                    item.get("Message", ""),
                )
                failed[item["Id"]] = failure
                if _retried(failure):
                    retry.append(by_id[item["Id"]])
            for item in response.get("Successful", []):
                successful.append(item)
                failed.pop(item["Id"], None)
        pending = retry
        if not pending:
            break
    return successful, failed


def _send_requests(entries: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return pack(entries, sqs_entry_size, max_bytes=SQS_MAX_BATCH_BYTES)


_ATTRIBUTE_KEYS = ("DataType", "StringValue", "BinaryValue")


def copy_attributes(attributes: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Received attributes in the shape SendMessage (and SNS Publish) takes: drops the empty
    list fields a receive returns."""
    return {
        name: {k: attr[k] for k in _ATTRIBUTE_KEYS if k in attr}
        for name, attr in attributes.items()
    }


def message_entry(
    entry_id: str,
    body: str,
    attributes: Mapping[str, Mapping[str, Any]],
    *,
    trace_header: str | None = None,
) -> dict[str, Any]:
    """One SendMessageBatch entry: body, attributes and the X-Ray trace header kept."""
    entry: dict[str, Any] = {"Id": entry_id, "MessageBody": body}
    if attributes:
        entry["MessageAttributes"] = copy_attributes(attributes)
    if trace_header:
        entry["MessageSystemAttributes"] = {
            "AWSTraceHeader": {"DataType": "String", "StringValue": trace_header}
        }
    return entry


class SqsQueue:
    """One queue URL and the calls the worker makes on it."""

    def __init__(
        self,
        client: Client,
        url: str,
        *,
        sleep: Sleep = anyio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        label: str | None = None,
    ) -> None:
        self.client = client
        self.url = url
        # how metrics name it: its name, and where it lives when elsewhere (`accounts:`)
        self.label = label or url.rstrip("/").rsplit("/", 1)[-1]
        self._sleep = sleep
        self._monotonic = monotonic
        self._max_message_bytes: int | None = None
        self._unread_until = float("-inf")  # a failed read is tried again after this

    @property
    def is_fifo(self) -> bool:
        return self.url.endswith(".fifo")

    async def receive(self, max_messages: int, wait: int, visibility: int) -> list[dict[str, Any]]:
        response = await self.client.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait,
            VisibilityTimeout=visibility,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    @property
    def known_max_message_bytes(self) -> int | None:
        """MaximumMessageSize if it was read already (no call)."""
        return self._max_message_bytes

    async def max_message_bytes(self) -> int:
        """The queue's own MaximumMessageSize, read once, on first use (an idle queue pays
        nothing). If it cannot be read, the service limit stands in for now (the send itself
        will say what is wrong) and the read is tried again after `REREAD_SECONDS`: a guess is
        never kept, or a message too large for a 256 KiB queue would be refused every minute
        instead of being held as unparkable."""
        if self._max_message_bytes is not None:
            return self._max_message_bytes
        if self._monotonic() < self._unread_until:
            return SQS_MAX_MESSAGE_BYTES
        try:
            response = await self.client.get_queue_attributes(
                QueueUrl=self.url, AttributeNames=["MaximumMessageSize"]
            )
            self._max_message_bytes = int(response["Attributes"]["MaximumMessageSize"])
        except Exception as exc:  # noqa: BLE001 - degrade to the service limit, for now
            log.warning("max_message_size_unreadable", queue=self.url, error=error_code(exc))
            self._unread_until = self._monotonic() + REREAD_SECONDS
            return SQS_MAX_MESSAGE_BYTES
        return self._max_message_bytes

    async def send(
        self, entries: Sequence[dict[str, Any]], *, attempts: int = 3
    ) -> tuple[list[dict[str, Any]], dict[str, EntryFailure]]:
        """SendMessageBatch in requests of at most 10 entries and 1 MiB; `attempts=1` where a
        retried entry would land behind later ones of its FIFO group."""
        return await batch_call(
            self._call("send_message_batch"),
            entries,
            attempts=attempts,
            sleep=self._sleep,
            cut=_send_requests,
        )

    async def delete(self, receipts: dict[str, str]) -> dict[str, EntryFailure]:
        entries = [{"Id": i, "ReceiptHandle": r} for i, r in receipts.items()]
        _, failed = await batch_call(self._call("delete_message_batch"), entries, sleep=self._sleep)
        return failed

    async def change_visibility(
        self, receipts: dict[str, tuple[str, int]]
    ) -> dict[str, EntryFailure]:
        entries = [
            {"Id": i, "ReceiptHandle": r, "VisibilityTimeout": t} for i, (r, t) in receipts.items()
        ]
        call = self._call("change_message_visibility_batch")
        _, failed = await batch_call(call, entries, sleep=self._sleep)
        return failed

    def _call(self, operation: str) -> Callable[[list[dict[str, Any]]], Awaitable[dict[str, Any]]]:
        method = getattr(self.client, operation)

        async def call(entries: list[dict[str, Any]]) -> dict[str, Any]:
            result: dict[str, Any] = await method(QueueUrl=self.url, Entries=entries)
            return result

        return call


# What SQS answers for a queue that does not exist (the query and the JSON protocol).
QUEUE_GONE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


async def resolve_queue_url(client: Client, ref: str) -> str:
    """A queue URL from a URL, a name or an ARN."""
    if ref.startswith(("https://", "http://")):
        return ref
    if arn := parse_arn(ref):
        owner = arn.account
        response = await client.get_queue_url(QueueName=arn.resource, QueueOwnerAWSAccountId=owner)
    else:
        response = await client.get_queue_url(QueueName=ref)
    return str(response["QueueUrl"])


async def existing_queue_url(client: Client, ref: str) -> str:
    """The URL of a queue that exists: a URL is asked too (GetQueueAttributes), so a typo in
    one raises NonExistentQueue here instead of reading as an empty queue."""
    url = await resolve_queue_url(client, ref)
    await client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url


@dataclass(frozen=True)
class RedriveSource:
    arn: str
    url: str
    max_receive_count: int


async def redrive_sources(client: Client, dlq_url: str) -> dict[str, RedriveSource]:
    """The queues that dead-letter into this DLQ, by ARN, with their `maxReceiveCount`."""
    urls: list[str] = []
    kwargs: dict[str, Any] = {"QueueUrl": dlq_url, "MaxResults": 1000}
    while True:
        response = await client.list_dead_letter_source_queues(**kwargs)
        urls.extend(response.get("queueUrls", []))
        token = response.get("NextToken")
        if not token:
            break
        kwargs["NextToken"] = token
    sources: dict[str, RedriveSource] = {}
    for url in urls:
        try:
            attrs = (
                await client.get_queue_attributes(
                    QueueUrl=url, AttributeNames=["QueueArn", "RedrivePolicy"]
                )
            )["Attributes"]
        except Exception as exc:  # noqa: BLE001 - e.g. a source added after the IAM policy
            # One unreadable source must not stop the DLQ from being served; its messages
            # count attempts from the other sources (or from 0).
            log.warning("redrive_source_unreadable", source=url, error=error_code(exc))
            continue
        policy = json.loads(attrs.get("RedrivePolicy", "{}"))
        count = int(policy.get("maxReceiveCount", 0))
        sources[attrs["QueueArn"]] = RedriveSource(attrs["QueueArn"], url, count)
    return sources
