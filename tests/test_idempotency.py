"""The idempotency key (SPEC.md, Idempotency): the same for every attempt and every duplicate
delivery of one DLQ message, carried to each target the way it can take it."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import drain, run_until
from worker.core.envelope import DlqMessage
from worker.emulator import create_function, create_queue
from worker.emulator.proxy import Rule
from worker.targets.base import Delivery, fifo_fields, key_hash
from worker.targets.lambda_ import CLIENT_CONTEXT_MAX, client_context

pytestmark = pytest.mark.anyio

FAST_LEASE = {"visibility_timeout_seconds": 2, "wait_seconds": 1, "idle_max_interval_seconds": 0}


async def test_a_fifo_resend_after_a_failed_delete_is_deduplicated(aws, proxy, worker_stack):
    """Issue 18, defect 1: the dedup id hashed message id and attempt, and the attempt grows
    with every receive: a re-send after a failed delete landed twice in a FIFO queue."""
    dlq = await create_queue(aws.sqs, "jobs-dlq.fifo", FifoQueue="true")
    out = await create_queue(aws.sqs, "jobs.fifo", FifoQueue="true")
    await create_queue(aws.sqs, "parked")
    queues = {
        "jobs": {
            "name": "jobs-dlq.fifo",
            "target": {"kind": "sqs", "queue": "jobs.fifo"},
            "receive": FAST_LEASE,
        }
    }
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    poller = await worker.poller("jobs")
    await aws.sqs.send_message(
        QueueUrl=dlq, MessageBody="job", MessageGroupId="g", MessageDeduplicationId="d1"
    )
    # The delete fails (after its retries) on the first settle: the message comes back.
    proxy.add(Rule("sqs", "DeleteMessageBatch", "error", status=500, times=3))

    await run_until(poller, lambda: worker.settled("jobs", "deleted") == 2)

    sends = proxy.requests("sqs", "SendMessageBatch")
    dedup = {e["MessageDeduplicationId"] for s in sends for e in s["Entries"]}
    assert len([e for s in sends for e in s["Entries"]]) == 2  # sent twice...
    assert len(dedup) == 1  # ...under one deduplication id
    assert [m["Body"] for m in await drain(aws.sqs, out)] == ["job"]  # SQS kept one


@pytest.mark.parametrize("kind", ["sqs", "sns"])
async def test_a_message_that_comes_back_gets_a_new_deduplication_id(
    aws, proxy, worker_stack, kind
):
    """Issue 27, defect 1: the dedup id hashed the key alone, and the key travels with the
    message: when the target's consumer failed and SQS dead-lettered it into our DLQ again,
    the next send carried the same id and SQS/SNS (5-minute window) answered "successful"
    and enqueued nothing, and we deleted the DLQ copy. A new DLQ message is a new cycle."""
    sns = await aws.client("sns")
    dlq = await create_queue(aws.sqs, "jobs-dlq.fifo", FifoQueue="true")
    out = await create_queue(aws.sqs, "jobs.fifo", FifoQueue="true")
    await create_queue(aws.sqs, "parked")
    if kind == "sqs":
        target = {"kind": "sqs", "queue": "jobs.fifo"}
    else:
        topic = await sns.create_topic(Name="jobs.fifo", Attributes={"FifoTopic": "true"})
        target = {"kind": "sns", "topic_arn": topic["TopicArn"]}
    queues = {"jobs": {"name": "jobs-dlq.fifo", "target": target, "receive": FAST_LEASE}}
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    poller = await worker.poller("jobs")
    # Two cycles of one message: each came back from the target's queue with our key on it.
    carried = {"retry-worker.idempotency-key": {"DataType": "String", "StringValue": "order-1"}}
    for cycle in (1, 2):
        await aws.sqs.send_message(
            QueueUrl=dlq,
            MessageBody="job",
            MessageGroupId="g",
            MessageDeduplicationId=f"cycle-{cycle}",
            MessageAttributes=carried,
        )
        await run_until(poller, lambda c=cycle: worker.settled("jobs", "deleted") == c)

    operation = "SendMessageBatch" if kind == "sqs" else "PublishBatch"
    entries = [e for s in proxy.requests(kind, operation) for e in _entries(s)]
    assert len(entries) == 2
    assert len({e["MessageDeduplicationId"] for e in entries}) == 2  # a new id per cycle
    # The consumer still sees one key (SQS: the attribute; SNS: its form's value field).
    assert all("order-1" in json.dumps(e) for e in entries)
    if kind == "sqs":
        assert [m["Body"] for m in await drain(aws.sqs, out)] == ["job", "job"]


def _entries(request: dict[str, Any]) -> list[dict[str, Any]]:
    """A batch request's entries: SQS's JSON as it is, SNS's query form by member."""
    if "Entries" in request:
        return list(request["Entries"])
    members: dict[str, dict[str, Any]] = {}
    for field, value in request.items():
        prefix, _, rest = field.partition(".member.")
        if prefix == "PublishBatchRequestEntries":
            index, _, name = rest.partition(".")
            members.setdefault(index, {})[name] = value
    return list(members.values())


def test_the_deduplication_id_is_one_per_dlq_message():
    """Stable across receives and attempts of one DLQ message; new for another message."""
    first = DlqMessage("m-1", "receipt-1", "{}", group_id="g")
    again = DlqMessage("m-1", "receipt-2", "{}", receive_count=2, group_id="g")
    other = DlqMessage("m-2", "receipt-3", "{}", group_id="g")
    ids = [
        fifo_fields(Delivery(m, attempt, key="k"))["MessageDeduplicationId"]
        for m, attempt in ((first, 1), (again, 2), (other, 1))
    ]
    assert ids[0] == ids[1] != ids[2]


async def test_lambda_gets_the_key_in_its_client_context(aws, proxy, worker_stack):
    await create_function(aws.lambda_, "orders")
    await create_function(aws.lambda_, "audit")
    dlq = await create_queue(aws.sqs, "orders-dlq")
    audit = await create_queue(aws.sqs, "audit-dlq")
    await create_queue(aws.sqs, "parked")
    queues = {
        "orders": {
            "name": "orders-dlq",
            "target": {"kind": "lambda", "function": "orders"},
            "idempotency_key": "body.orderId",
        },
        "audit": {
            "name": "audit-dlq",
            "target": {"kind": "lambda", "function": "audit", "invocation_type": "Event"},
        },
    }
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    orders, events = await worker.poller("orders"), await worker.poller("audit")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"orderId": "o-17"}')
    await aws.sqs.send_message(QueueUrl=audit, MessageBody='{"x": 1}')

    await run_until(orders, lambda: worker.settled("orders", "deleted") == 1)
    [sync] = proxy.headers("lambda", "Invoke")
    context = json.loads(base64.b64decode(sync["x-amz-client-context"]))
    assert context == {
        "custom": {"retry-worker": {"idempotency_key": "o-17", "attempt": 1, "queue": "orders"}}
    }
    await run_until(events, lambda: worker.settled("audit", "deleted") == 1)
    # Lambda passes no client context to Event invocations: none is sent, the payload as is.
    assert "x-amz-client-context" not in proxy.headers("lambda", "Invoke")[1]
    assert proxy.requests("lambda", "Invoke")[1] == {"x": 1}


def test_a_long_key_is_hashed_to_fit_the_client_context():
    message = DlqMessage("m", "r", "{}")
    delivery = Delivery(message, 2, key="k" * 5000, queue="orders")
    encoded = client_context(delivery)
    assert len(encoded) <= CLIENT_CONTEXT_MAX
    ours = json.loads(base64.b64decode(encoded))["custom"]["retry-worker"]
    assert ours["idempotency_key"] == key_hash("k" * 5000)
    assert ours["attempt"] == 2


async def test_sqs_and_sns_targets_carry_the_key_as_an_attribute(aws, proxy, worker_stack):
    sns = await aws.client("sns")
    topic = (await sns.create_topic(Name="events"))["TopicArn"]
    seen = await create_queue(aws.sqs, "subscriber")
    await sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint="arn:aws:sqs:us-east-1:123456789012:subscriber",
        Attributes={"RawMessageDelivery": "true"},
    )
    await create_queue(aws.sqs, "to-sqs-dlq")
    await create_queue(aws.sqs, "to-sns-dlq")
    out = await create_queue(aws.sqs, "out")
    await create_queue(aws.sqs, "parked")
    queues = {
        "to-sqs": {"name": "to-sqs-dlq", "target": {"kind": "sqs", "queue": "out"}},
        "to-sns": {"name": "to-sns-dlq", "target": {"kind": "sns", "topic_arn": topic}},
    }
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    sent = {}
    for name in queues:
        url = (await aws.sqs.get_queue_url(QueueName=f"{name}-dlq"))["QueueUrl"]
        sent[name] = (await aws.sqs.send_message(QueueUrl=url, MessageBody=name))["MessageId"]
        await run_until(await worker.poller(name), lambda n=name: worker.settled(n, "deleted") == 1)

    [via_sqs] = await drain(aws.sqs, out)
    key = via_sqs["MessageAttributes"]["retry-worker.idempotency-key"]["StringValue"]
    assert key == sent["to-sqs"]
    [via_sns] = await drain(aws.sqs, seen)
    key = via_sns["MessageAttributes"]["retry-worker.idempotency-key"]["StringValue"]
    assert key == sent["to-sns"]


async def test_a_message_with_ten_attributes_is_sent_without_the_key(aws, proxy, worker_stack):
    dlq = await create_queue(aws.sqs, "full-dlq")
    out = await create_queue(aws.sqs, "out")
    await create_queue(aws.sqs, "parked")
    attributes = {f"a{i}": {"DataType": "String", "StringValue": str(i)} for i in range(10)}
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="full", MessageAttributes=attributes)
    queues = {"full": {"name": "full-dlq", "target": {"kind": "sqs", "queue": "out"}}}
    worker = Worker(make_settings(proxy.url, queues), worker_stack)

    await run_until(await worker.poller("full"), lambda: worker.settled("full", "deleted") == 1)

    [message] = await drain(aws.sqs, out)
    assert set(message["MessageAttributes"]) == set(attributes)  # nothing dropped for ours


async def test_step_functions_names_the_execution_after_the_key(aws, proxy, worker_stack):
    from worker.emulator import ROLE_ARN

    definition = json.dumps({"StartAt": "S", "States": {"S": {"Type": "Succeed"}}})
    machine = await aws.sfn.create_state_machine(
        name="ship", definition=definition, roleArn=ROLE_ARN
    )
    dlq = await create_queue(aws.sqs, "ship-dlq")
    await create_queue(aws.sqs, "parked")
    target = {"kind": "stepfunctions", "state_machine_arn": machine["stateMachineArn"]}
    queues = {"ship": {"name": "ship-dlq", "target": target, "idempotency_key": "body.id"}}
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"id": "shipment-9"}')

    await run_until(await worker.poller("ship"), lambda: worker.settled("ship", "deleted") == 1)

    [start] = proxy.requests("states", "StartExecution")
    assert start["name"] == "rw-shipment-9"


@pytest.mark.slow
async def test_a_replay_to_the_target_gives_it_the_key_every_attempt_had(
    aws, proxy, worker_stack, tmp_path
):
    """A synchronous Lambda did the work but every answer failed: the message is parked. The
    operator replays it to the target, which deduplicates by the key — so the replay must
    carry the DLQ message's id, not the id SQS gave the parked copy (SPEC.md, Idempotency)."""
    from tests.test_operator_loop import Cli

    await create_function(aws.lambda_, "orders")
    dlq = await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "parked")
    queues = {"orders": {"name": "orders-dlq", "target": {"kind": "lambda", "function": "orders"}}}
    policy = {"max_attempts": 1, "parking_queue": "parked"}  # the failure parks at once
    settings = make_settings(proxy.url, queues, defaults={"policy": policy})
    worker = Worker(settings, worker_stack)
    sent = await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"orderId": "o-9"}')
    proxy.add(Rule("lambda", "Invoke", "error", status=500, code="ServiceException", after=True))
    await run_until(await worker.poller("orders"), lambda: worker.settled("orders", "parked") == 1)
    proxy.clear()

    result = await Cli(tmp_path, settings.model_dump(mode="json"))(
        "parked", "replay", "orders", "--to", "target", "--yes"
    )
    assert result.returncode == 0, result.stderr
    [replayed] = proxy.headers("lambda", "Invoke")
    context = json.loads(base64.b64decode(replayed["x-amz-client-context"]))
    assert context["custom"]["retry-worker"]["idempotency_key"] == sent["MessageId"]
