"""EventBridge and SNS targets: batches, per-entry results, size limits, attributes kept."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import depth, drain
from worker.core.envelope import DlqMessage
from worker.core.errors import ErrorKind
from worker.emulator import create_queue, queue_arn
from worker.settings import EventBridgeTarget
from worker.targets.base import Delivery
from worker.targets.eventbridge import EventBridgePublisher

pytestmark = pytest.mark.anyio

EVENT = {
    "version": "0",
    "id": "e-1",
    "detail-type": "OrderPlaced",
    "source": "shop",
    "detail": {"orderId": 7},
}


async def test_eventbridge_target_puts_events_and_parks_what_it_cannot_send(
    aws, proxy, worker_stack
):
    events = await aws.client("events")
    await events.create_event_bus(Name="orders-bus")
    out = await create_queue(aws.sqs, "eb-out")
    await events.put_rule(
        Name="all",
        EventBusName="orders-bus",
        EventPattern=json.dumps({"source": ["shop", "retry-worker.replay"]}),
    )
    await events.put_targets(
        Rule="all",
        EventBusName="orders-bus",
        Targets=[{"Id": "q", "Arn": await queue_arn(aws.sqs, out)}],
    )
    dlq = await create_queue(aws.sqs, "eb-dlq")
    parked = await create_queue(aws.sqs, "parked")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(EVENT))
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"plain": true}')
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="not json")
    queues = {
        "eb": {"name": "eb-dlq", "target": {"kind": "eventbridge", "event_bus": "orders-bus"}}
    }
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    poller = await worker.poller("eb")

    while worker.settled("eb", "deleted") + worker.settled("eb", "parked") < 3:
        await poller.run_once()

    assert proxy.count("events", "PutEvents") == 1  # one call for the batch
    delivered = [json.loads(m["Body"]) for m in await drain(aws.sqs, out)]
    assert sorted(e["source"] for e in delivered) == ["retry-worker.replay", "shop"]
    shop = next(e for e in delivered if e["source"] == "shop")
    assert (shop["detail-type"], shop["detail"]) == ("OrderPlaced", {"orderId": 7})
    [bad] = await drain(aws.sqs, parked)
    assert bad["Body"] == "not json"
    assert bad["MessageAttributes"]["retry-worker.reason"]["StringValue"] == "unparseable"
    assert await depth(aws.sqs, dlq) == 0


class FakeEvents:
    def __init__(self, codes: list[str | None]) -> None:
        self.codes = codes

    async def put_events(self, Entries):
        return {
            "FailedEntryCount": sum(1 for c in self.codes if c),
            "Entries": [
                {"ErrorCode": c, "ErrorMessage": "m"} if c else {"EventId": "x"} for c in self.codes
            ],
        }


async def test_eventbridge_per_entry_errors_are_classified():
    codes = [
        None,
        "ThrottlingException",
        "InternalFailure",
        "AccessDeniedException",
        "MalformedDetail",
    ]
    publisher = EventBridgePublisher(
        FakeEvents(codes), EventBridgeTarget(kind="eventbridge", event_bus="b")
    )
    batch = [Delivery(DlqMessage(str(i), "r", json.dumps(EVENT)), 1) for i in range(len(codes))]
    results = await publisher.deliver(batch)
    assert results[0] is None
    assert [r.kind for r in results[1:]] == [
        ErrorKind.THROTTLED,
        ErrorKind.RETRYABLE,
        ErrorKind.PERMANENT,
        ErrorKind.PERMANENT,
    ]


async def test_sns_target_publishes_in_batches_with_attributes(aws, proxy, worker_stack):
    sns = await aws.client("sns")
    topic = (await sns.create_topic(Name="alerts"))["TopicArn"]
    out = await create_queue(aws.sqs, "sns-out", MaximumMessageSize=str(1024 * 1024))
    await sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=await queue_arn(aws.sqs, out),
        Attributes={"RawMessageDelivery": "true"},
    )
    one_mib = {"MaximumMessageSize": str(1024 * 1024)}
    dlq = await create_queue(aws.sqs, "sns-dlq", **one_mib)
    parked = await create_queue(aws.sqs, "parked", **one_mib)
    attributes = {"severity": {"DataType": "String", "StringValue": "high"}}
    for i in range(3):
        await aws.sqs.send_message(
            QueueUrl=dlq, MessageBody=f"alert {i}", MessageAttributes=attributes
        )
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="x" * 300_000)
    queues = {"alerts": {"name": "sns-dlq", "target": {"kind": "sns", "topic_arn": topic}}}
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    poller = await worker.poller("alerts")

    while worker.settled("alerts", "deleted") + worker.settled("alerts", "parked") < 4:
        await poller.run_once()

    assert proxy.count("sns", "PublishBatch") == 1
    delivered = await drain(aws.sqs, out)
    assert sorted(m["Body"] for m in delivered) == ["alert 0", "alert 1", "alert 2"]
    assert all(m["MessageAttributes"]["severity"]["StringValue"] == "high" for m in delivered)
    [big] = await drain(aws.sqs, parked)
    assert big["MessageAttributes"]["retry-worker.reason"]["StringValue"] == "too_large"


@pytest.mark.parametrize(
    "fields",
    [{"source": 5}, {"detail-type": ["X"]}, {"resources": "arn:one"}, {"resources": [1]}],
    ids=["source", "detail-type", "resources", "resource"],
)
def test_an_event_field_of_the_wrong_type_is_that_message_s_problem(fields):
    """A field of the wrong type fails the whole PutEvents request (serialisation, not a
    per-entry error), so every batch-mate with it: it is parked `unparseable` instead."""
    from worker.core.errors import DeliveryError
    from worker.targets.eventbridge import put_events_entry

    event = {"source": "shop", "detail-type": "X", "detail": {"a": 1}, **fields}
    with pytest.raises(DeliveryError) as caught:
        put_events_entry(json.dumps(event), "orders-bus")
    assert caught.value.park_reason == "unparseable"
