"""A DLQ fed by several source queues (issue 27, defect 6): a parked message keeps the queue
that dead-lettered it, and a replay, to the target or through the DLQ, goes back to that queue.
Real SQS names it in `DeadLetterQueueSourceArn`; the emulator never does, so the proxy adds it
to the DLQ's first receive as SQS would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import drain, run_until
from tests.test_operator_loop import Cli
from worker.core.envelope import parse_message
from worker.decisions.view import build_view
from worker.emulator import create_queue, create_source_with_dlq, queue_arn
from worker.emulator.proxy import Rule

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("to", ["target", "dlq"])
async def test_a_parked_message_replays_to_the_queue_that_dead_lettered_it(
    aws, proxy, worker_stack, tmp_path: Path, to: str
):
    source_a, dlq = await create_source_with_dlq(aws.sqs, "src-a", "shared-dlq", 1)
    policy = {"deadLetterTargetArn": await queue_arn(aws.sqs, dlq), "maxReceiveCount": 1}
    source_b = await create_queue(aws.sqs, "src-b", RedrivePolicy=json.dumps(policy))
    parked = await create_queue(aws.sqs, "parked")
    queues = {
        "shared": {
            "name": "shared-dlq",
            "target": {"kind": "sqs", "source": True},
            "policy": {"max_attempts": 1},
        }
    }
    settings = make_settings(proxy.url, queues)
    worker = Worker(settings, worker_stack)
    poller = await worker.poller("shared")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="from b")
    b_arn = await queue_arn(aws.sqs, source_b)
    named = {"DeadLetterQueueSourceArn": b_arn}
    # SQS names the source only on what it dead-lettered itself: the first receive.
    names = Rule("sqs", "ReceiveMessage", "system_attributes", extra=named, body="shared-dlq")
    names.times = 1
    proxy.add(names)
    # src-b is refused for a while (each of the send's three tries): the message is parked.
    proxy.add(Rule("sqs", "SendMessageBatch", "fail_entries", body='src-b"', times=3))

    await run_until(poller, lambda: worker.settled("shared", "parked") == 1)

    [message] = (
        await aws.sqs.receive_message(
            QueueUrl=parked, MessageAttributeNames=["All"], VisibilityTimeout=0
        )
    )["Messages"]
    assert message["MessageAttributes"]["retry-worker.source-arn"]["StringValue"] == b_arn

    cli = Cli(tmp_path, settings.model_dump(mode="json"))
    replay = await cli("parked", "replay", "shared", "--to", to, "--yes")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    if to == "dlq":  # a fresh copy in the DLQ, which SQS does not name: our marker does
        await run_until(poller, lambda: worker.settled("shared", "deleted") == 1)

    assert [m["Body"] for m in await drain(aws.sqs, source_b)] == ["from b"]
    assert await drain(aws.sqs, source_a) == []
    assert await drain(aws.sqs, parked) == []


async def test_a_carried_source_is_used_only_if_it_is_a_redrive_source(aws, proxy, worker_stack):
    """Our marker and the parking metadata are message attributes: anyone who can send to the
    queue can write them. A queue they name that does not feed the DLQ (a forgery, or a
    former source) is never sent to, not even the DLQ's only source instead (we know the
    message came from elsewhere), `kind: auto` does not follow it either, and the view that
    rules and hooks see never shows it as SQS's word."""
    source_a, dlq = await create_source_with_dlq(aws.sqs, "src-a", "one-dlq", 1)
    _, auto_dlq = await create_source_with_dlq(aws.sqs, "src-b", "auto-dlq", 1)
    elsewhere = await create_queue(aws.sqs, "src-elsewhere")
    parked = await create_queue(aws.sqs, "parked")
    forged = {
        "retry-worker.source-arn": {
            "DataType": "String",
            "StringValue": await queue_arn(aws.sqs, elsewhere),
        }
    }
    for url in (dlq, auto_dlq):
        await aws.sqs.send_message(QueueUrl=url, MessageBody="forged", MessageAttributes=forged)
    allow = ["arn:aws:sqs:us-east-1:123456789012:src-*"]  # src-elsewhere matches: not enough
    queues = {
        "one": {"name": "one-dlq", "target": {"kind": "sqs", "source": True}},
        "auto": {"name": "auto-dlq", "target": {"kind": "auto", "allow": allow}},
    }
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    for name in queues:
        poller = await worker.poller(name)
        await run_until(poller, lambda n=name: worker.settled(n, "parked") == 1)

    assert await drain(aws.sqs, elsewhere) == []
    assert await drain(aws.sqs, source_a) == []
    reasons = sorted(
        m["MessageAttributes"]["retry-worker.reason"]["StringValue"]
        for m in await drain(aws.sqs, parked)
    )
    assert reasons == ["no_source", "no_target"]
    view = build_view("one", parse_message(_as_received(forged)), 1, 0.0, unwrap=False)
    assert view["source_arn"] is None  # only SQS's DeadLetterQueueSourceArn is shown


def _as_received(attributes: dict) -> dict:
    """A message as ReceiveMessage returns it, with these attributes and no system ones."""
    return {"MessageId": "m", "ReceiptHandle": "r", "Body": "{}", "MessageAttributes": attributes}


async def test_rules_and_delivery_see_the_same_checked_source(aws, proxy, worker_stack):
    """A copy we replayed to a DLQ with several sources carries its source in our marker;
    `kind: auto` sends it back there whole. The view that rules, transforms and keys see
    must say the same (an SQS redrive, the whole body), not unwrap the SNS envelope inside
    it: a transform of `text` would otherwise send the inner message alone."""
    _, dlq = await create_source_with_dlq(aws.sqs, "src-a", "shared-dlq", 1)
    policy = {"deadLetterTargetArn": await queue_arn(aws.sqs, dlq), "maxReceiveCount": 1}
    source_b = await create_queue(aws.sqs, "src-b", RedrivePolicy=json.dumps(policy))
    await create_queue(aws.sqs, "parked")
    envelope = json.dumps(
        {
            "Type": "Notification",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
            "Message": '{"order": 1}',
            "Timestamp": "2026-12-06T00:00:00Z",
        }
    )
    marker = {"DataType": "String", "StringValue": await queue_arn(aws.sqs, source_b)}
    await aws.sqs.send_message(
        QueueUrl=dlq, MessageBody=envelope, MessageAttributes={"retry-worker.source-arn": marker}
    )
    allow = ["arn:aws:sqs:us-east-1:123456789012:src-*"]
    queue = {"name": "shared-dlq", "target": {"kind": "auto", "allow": allow}, "transform": "text"}
    worker = Worker(make_settings(proxy.url, {"shared": queue}), worker_stack)

    await run_until(await worker.poller("shared"), lambda: worker.settled("shared", "deleted") == 1)

    assert [m["Body"] for m in await drain(aws.sqs, source_b)] == [envelope]
