"""Size limits: batches cut by count and by bytes (as AWS counts them), messages too large for
their target parked at once, messages too large to park kept in their DLQ, unchanged."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import depth, drain
from worker.aws.sqs import batch_call
from worker.core.limits import (
    EVENTS_MAX_BATCH_BYTES,
    SNS_MAX_BATCH_BYTES,
    SQS_MAX_BATCH_BYTES,
    attributes_size,
    events_entry_size,
    pack,
    sqs_entry_size,
)
from worker.emulator import create_queue, queue_arn
from worker.emulator.proxy import Rule

pytestmark = pytest.mark.anyio

KB200 = 200_000


def big_bodies(n: int, size: int) -> list[str]:
    """Distinct bodies of exactly `size` bytes, some multi-byte characters in each."""
    return [(f"{i:03d}é" + "x" * size)[: size - 1] for i in range(n)]


# -- pure ------------------------------------------------------------------------------------


def test_pack_cuts_by_count_and_by_bytes_in_order():
    assert pack(list(range(25)), lambda _: 1, max_bytes=100) == [
        list(range(10)),
        list(range(10, 20)),
        list(range(20, 25)),
    ]
    sizes = [400, 400, 400, 100, 900, 50]
    assert pack(sizes, lambda s: s, max_bytes=1000) == [[400, 400], [400, 100], [900, 50]]
    assert pack([2000, 10], lambda s: s, max_bytes=1000) == [[2000], [10]]


def test_attribute_sizes_count_name_type_and_value():
    attributes = {
        "é": {"DataType": "String", "StringValue": "ab"},  # 2 + 6 + 2
        "n": {"DataType": "Number", "StringValue": "12"},  # 1 + 6 + 2
        "b": {"DataType": "Binary", "BinaryValue": b"\x00\x01\x02"},  # 1 + 6 + 3
    }
    assert attributes_size(attributes) == 10 + 9 + 10


def test_eventbridge_entry_size_follows_aws_rule():
    entry = {
        "Source": "shop",
        "DetailType": "Placed",
        "Detail": '{"a":1}',
        "Resources": ["arn:x"],
        "EventBusName": "not counted",
    }
    assert events_entry_size(entry) == 4 + 6 + 7 + 5
    assert events_entry_size({**entry, "Time": "2026-01-01T00:00:00Z"}) == 22 + 14


class FakeBatch:
    """A *Batch API that fails some entries, or the whole call."""

    def __init__(self, code: str | None = None, sender_fault: bool = False, raises=None):
        self.calls = 0
        self.code, self.sender_fault, self.raises = code, sender_fault, raises

    async def __call__(self, entries):
        self.calls += 1
        if self.raises is not None:
            raise self.raises
        failed = [
            {"Id": e["Id"], "Code": self.code, "SenderFault": self.sender_fault} for e in entries
        ]
        return {"Successful": [], "Failed": failed if self.code else []}


async def _no_sleep(_: float) -> None:
    return None


@pytest.mark.parametrize(
    ("fake", "calls"),
    [
        (FakeBatch("InternalError"), 3),  # the server's transient fault: retried
        (FakeBatch("InvalidParameterValue", sender_fault=True), 1),
        (FakeBatch("AccessDenied"), 1),  # permanent, whatever SenderFault says
        (FakeBatch("AWS.SimpleQueueService.NonExistentQueue"), 1),
        (FakeBatch(raises=ConnectionError("reset")), 1),  # botocore already retried it
    ],
)
async def test_batch_call_retries_only_transient_entry_failures(fake, calls):
    _, failed = await batch_call(fake, [{"Id": "0"}, {"Id": "1"}], sleep=_no_sleep)
    assert fake.calls == calls
    assert set(failed) == {"0", "1"}


# -- on the emulator -------------------------------------------------------------------------


async def big_dlq(aws, proxy, worker_stack, target_queue: str):
    """Ten 200 kB messages in a DLQ, and a worker for it with an SQS target."""
    dlq = await create_queue(aws.sqs, "big-dlq")
    bodies = big_bodies(10, KB200)
    for body in bodies:
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody=body)
    queues = {"big": {"name": "big-dlq", "target": {"kind": "sqs", "queue": target_queue}}}
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    return worker, await worker.poller("big"), dlq, bodies


async def test_large_messages_reach_an_sqs_target_whole_in_one_pass(aws, proxy, worker_stack):
    out = await create_queue(aws.sqs, "big-out")
    await create_queue(aws.sqs, "parked")
    worker, poller, dlq, bodies = await big_dlq(aws, proxy, worker_stack, "big-out")

    received = 0
    while received < 10:
        received += await poller.run_once()

    assert worker.settled("big", "deleted") == 10
    assert worker.settled("big", "deferred") == 0
    assert sorted(m["Body"] for m in await drain(aws.sqs, out)) == sorted(bodies)
    sends = proxy.accepted_requests("sqs", "SendMessageBatch")
    assert len(sends) == 2
    for request in sends:
        assert sum(sqs_entry_size(e) for e in request["Entries"]) <= SQS_MAX_BATCH_BYTES
    assert await depth(aws.sqs, dlq) == 0


async def test_large_messages_that_fail_are_all_parked_byte_for_byte(aws, proxy, worker_stack):
    parked = await create_queue(aws.sqs, "parked")
    # a target queue that does not exist: every message is parked `target_not_found` at once
    worker, poller, dlq, bodies = await big_dlq(aws, proxy, worker_stack, "missing")

    while worker.settled("big", "parked") < 10:
        await poller.run_once()

    got = await drain(aws.sqs, parked)
    assert sorted(m["Body"] for m in got) == sorted(bodies)
    assert {m["MessageAttributes"]["retry-worker.reason"]["StringValue"] for m in got} == {
        "target_not_found"
    }
    assert worker.settled("big", "deferred") == 0
    assert await depth(aws.sqs, dlq) == 0


async def test_message_over_the_target_queue_limit_is_parked_too_large(aws, proxy, worker_stack):
    dlq = await create_queue(aws.sqs, "dlq")
    out = await create_queue(aws.sqs, "small-out", MaximumMessageSize="1024")
    parked = await create_queue(aws.sqs, "parked")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="y" * 2000)
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="fits")
    queues = {"q": {"name": "dlq", "target": {"kind": "sqs", "queue": "small-out"}}}
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    poller = await worker.poller("q")

    while worker.settled("q", "parked") + worker.settled("q", "deleted") < 2:
        await poller.run_once()

    [ok] = await drain(aws.sqs, out)
    assert ok["Body"] == "fits"
    [big] = await drain(aws.sqs, parked)
    assert big["Body"] == "y" * 2000
    assert big["MessageAttributes"]["retry-worker.reason"]["StringValue"] == "too_large"
    assert proxy.count("sqs", "GetQueueAttributes") == 3  # limits read once per queue


async def test_message_too_large_to_park_stays_in_its_dlq_held_and_counted(
    aws, proxy, worker_stack
):
    dlq = await create_queue(aws.sqs, "dlq")
    parked = await create_queue(aws.sqs, "parked", MaximumMessageSize="1024")
    body = "z" * 1024  # exactly the parking queue's limit: no parking form fits
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=body)
    queues = {"q": {"name": "dlq", "target": {"kind": "sqs", "queue": "missing"}}}
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    poller = await worker.poller("q")

    assert await poller.run_once() == 1

    unparkable = worker.registry.get_sample_value(
        "retry_worker_unparkable_messages_total", {"queue": "q"}
    )
    assert unparkable == 1
    assert proxy.count("sqs", "SendMessageBatch") == 0  # nothing sent that could not fit
    [change] = proxy.requests("sqs", "ChangeMessageVisibilityBatch")
    assert change["Entries"][0]["VisibilityTimeout"] >= 43_000  # held, not retried each minute
    assert await depth(aws.sqs, parked) == 0
    assert await depth(aws.sqs, dlq) == 1
    # the message itself is untouched: make it visible again and read it
    receipt = change["Entries"][0]["ReceiptHandle"]
    await aws.sqs.change_message_visibility(
        QueueUrl=dlq, ReceiptHandle=receipt, VisibilityTimeout=0
    )
    [kept] = await drain(aws.sqs, dlq)
    assert kept["Body"] == body
    assert "MessageAttributes" not in kept


async def test_sns_batches_of_large_entries_are_split_not_failed(aws, proxy, worker_stack):
    sns = await aws.client("sns")
    topic = (await sns.create_topic(Name="big"))["TopicArn"]
    out = await create_queue(aws.sqs, "sns-out")
    await sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=await queue_arn(aws.sqs, out),
        Attributes={"RawMessageDelivery": "true"},
    )
    dlq = await create_queue(aws.sqs, "sns-dlq")
    await create_queue(aws.sqs, "parked")
    bodies = big_bodies(10, 100_000)
    for body in bodies:
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody=body)
    queues = {"s": {"name": "sns-dlq", "target": {"kind": "sns", "topic_arn": topic}}}
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    poller = await worker.poller("s")

    while worker.settled("s", "deleted") < 10:
        await poller.run_once()

    # two 100 kB entries fit in 256 KiB, three do not: five requests
    assert proxy.count("sns", "PublishBatch") == 10 * 100_000 // (2 * 100_000)
    assert 2 * 100_000 <= SNS_MAX_BATCH_BYTES < 3 * 100_000
    assert sorted(m["Body"] for m in await drain(aws.sqs, out)) == sorted(bodies)


async def test_eventbridge_batches_of_large_entries_are_split_not_failed(aws, proxy, worker_stack):
    events = await aws.client("events")
    await events.create_event_bus(Name="bus")
    out = await create_queue(aws.sqs, "eb-out")
    await events.put_rule(
        Name="all", EventBusName="bus", EventPattern=json.dumps({"source": ["shop"]})
    )
    await events.put_targets(
        Rule="all", EventBusName="bus", Targets=[{"Id": "q", "Arn": await queue_arn(aws.sqs, out)}]
    )
    dlq = await create_queue(aws.sqs, "eb-dlq")
    await create_queue(aws.sqs, "parked")
    for i in range(6):
        event = {"source": "shop", "detail-type": "Big", "detail": {"i": i, "pad": "p" * 100_000}}
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(event))
    queues = {"e": {"name": "eb-dlq", "target": {"kind": "eventbridge", "event_bus": "bus"}}}
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    poller = await worker.poller("e")

    while worker.settled("e", "deleted") < 6:
        await poller.run_once()

    puts = proxy.accepted_requests("events", "PutEvents")
    assert len(puts) == 3
    for request in puts:
        assert sum(events_entry_size(e) for e in request["Entries"]) <= EVENTS_MAX_BATCH_BYTES
    delivered = [json.loads(m["Body"])["detail"]["i"] for m in await drain(aws.sqs, out)]
    assert sorted(delivered) == list(range(6))
    assert not proxy.upstream_errors


async def test_a_size_limit_that_could_not_be_read_is_read_again_later(aws, proxy, worker_stack):
    """Issue 18, defect 7: a failed read was cached as 1 MiB for good, so a message too large
    for a small parking queue was refused every minute instead of being held."""
    from worker.aws.sqs import REREAD_SECONDS, SqsQueue

    url = await create_queue(aws.sqs, "small", MaximumMessageSize="1024")
    worker = Worker(make_settings(proxy.url, {}), worker_stack)
    now = [0.0]
    queue = SqsQueue(await worker.clients.get("sqs"), url, monotonic=lambda: now[0])
    proxy.add(Rule("sqs", "GetQueueAttributes", "error", status=403, code="AccessDenied", times=1))

    assert await queue.max_message_bytes() == 1024 * 1024  # the service limit, for now
    assert await queue.max_message_bytes() == 1024 * 1024  # not asked again at once
    assert proxy.count("sqs", "GetQueueAttributes") == 1
    now[0] += REREAD_SECONDS + 1
    assert await queue.max_message_bytes() == 1024  # read again: the real limit
    assert await queue.max_message_bytes() == 1024
    assert proxy.count("sqs", "GetQueueAttributes") == 2  # and kept once read
