"""What a second review of the redrive found (issue 35): an odd message in a `kind: auto`
batch, status-change events that cannot be redriven, EventBridge's duplicate events, stale
DescribeExecution reads, and an earlier execution of another input. Each fails without its fix."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import depth, drain, run_until, wait_for
from tests.test_sfn_redrive import _failed, _machine, _status, _status_change, _worker
from worker.core.envelope import DlqMessage
from worker.core.failure import parse_failure
from worker.emulator import ROLE_ARN, create_queue
from worker.emulator.proxy import Rule

pytestmark = pytest.mark.anyio

# Bodies parse_failure used to raise on: an SNS envelope whose UnsubscribeURL is not a URL, a
# Lambda record whose responseContext is not an object.
ODD = [
    json.dumps(
        {"Type": "Notification", "TopicArn": "t", "Message": "m", "UnsubscribeURL": "http://[x"}
    ),
    json.dumps({"requestContext": {"functionArn": "arn:f"}, "responseContext": "x"}),
]


def test_odd_bodies_are_read_without_raising():
    envelope, record = (parse_failure(DlqMessage("m", "r", body)) for body in ODD)
    assert (envelope.shape, envelope.target_arn) == ("sns_envelope", None)
    assert (record.shape, record.replayable) == ("lambda_destination", False)


def _auto(proxy: Any, worker_stack: Any, arn: str, max_attempts: int = 5) -> Worker:
    queues = {
        "states": {
            "name": "states-dlq",
            "target": {"kind": "auto", "allow": [arn]},
            "policy": {"max_attempts": max_attempts},
        }
    }
    return Worker(make_settings(proxy.url, queues), worker_stack)


def _reasons(messages: list[dict[str, Any]]) -> list[str]:
    return sorted(m["MessageAttributes"]["retry-worker.reason"]["StringValue"] for m in messages)


async def test_an_odd_message_is_parked_alone_its_batch_mates_settled(aws, proxy, worker_stack):
    arn, _, _ = await _machine(aws)
    dlq = await create_queue(aws.sqs, "states-dlq")
    parked = await create_queue(aws.sqs, "parked")
    worker = _auto(proxy, worker_stack, arn)
    poller = await worker.poller("states")
    for body in ["names nothing", *ODD]:
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody=body)

    await run_until(poller, lambda: worker.settled("states", "parked") == 3)

    assert _reasons(await drain(aws.sqs, parked)) == ["no_target", "no_target", "not_replayable"]


async def test_a_target_that_cannot_say_what_loops_costs_only_its_message(
    aws, proxy, worker_stack, monkeypatch
):
    """Should a target fail to say what comes back for one message, the body stands in: the
    batch goes on (one odd message is its own problem)."""
    arn, _, _ = await _machine(aws)
    dlq = await create_queue(aws.sqs, "states-dlq")
    parked = await create_queue(aws.sqs, "parked")
    worker = _auto(proxy, worker_stack, arn)
    poller = await worker.poller("states")
    target = poller._pipeline.target
    said = target.loop_seen

    def loop_seen(message: DlqMessage) -> tuple[str, str]:
        if message.body == "odd":
            raise ValueError("cannot say")
        return said(message)

    monkeypatch.setattr(target, "loop_seen", loop_seen)
    for body in ("odd", "names nothing"):
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody=body)

    await run_until(poller, lambda: worker.settled("states", "parked") == 2)

    assert _reasons(await drain(aws.sqs, parked)) == ["no_target", "no_target"]


async def test_events_that_cannot_be_redriven_spend_no_loop_budget(aws, proxy, worker_stack):
    """A RUNNING event (routed by a broad rule) and then the FAILED one, max_attempts 2: the
    failure is redriven, not parked `loop_detected`."""
    arn, _, _ = await _machine(aws)
    failed = await _failed(aws, arn, "e1")
    await create_queue(aws.sqs, "second")
    dlq = await create_queue(aws.sqs, "states-dlq")
    parked = await create_queue(aws.sqs, "parked")
    worker = _auto(proxy, worker_stack, arn, max_attempts=2)
    poller = await worker.poller("states")
    running = json.loads(_status_change(failed, arn, "RUNNING"))
    running["id"] = "another-event"  # an event of its own, as EventBridge numbers them
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(running))
    await run_until(poller, lambda: worker.settled("states", "parked") == 1)
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=_status_change(failed, arn))

    await run_until(poller, lambda: worker.settled("states", "deleted") == 1)

    await wait_for(lambda: _status(aws, failed, "SUCCEEDED"))
    assert _reasons(await drain(aws.sqs, parked)) == ["not_replayable"]


async def test_a_duplicate_event_is_not_a_second_failure(aws, proxy, worker_stack):
    """EventBridge delivers at least once: the same event twice (two SQS messages, one event
    id) counts once for the loop guard."""
    arn, _, _ = await _machine(aws)
    failed = await _failed(aws, arn, "e2")
    dlq = await create_queue(aws.sqs, "states-dlq")
    parked = await create_queue(aws.sqs, "parked")
    worker = _auto(proxy, worker_stack, arn, max_attempts=2)
    poller = await worker.poller("states")
    body = _status_change(failed, arn)
    for _ in range(2):
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody=body)

    await run_until(poller, lambda: worker.settled("states", "deleted") == 2)

    assert await drain(aws.sqs, parked) == []
    assert (await aws.sfn.describe_execution(executionArn=failed))["redriveCount"] == 1


def _behind(failed: str, arn: str, **fields: Any) -> dict[str, Any]:
    """A DescribeExecution answer from before the failure the event reports."""
    base = {"executionArn": failed, "stateMachineArn": arn, "name": failed.rsplit(":", 1)[1]}
    return {**base, "startDate": 1796623200, "input": "{}", **fields}


async def test_a_stale_running_read_is_read_again_not_trusted(aws, proxy, worker_stack):
    """One DescribeExecution says RUNNING with no redrive since the failure: eventually
    consistent, not an answer. The event stays, is read again, and the execution redriven."""
    arn, _, second = await _machine(aws)
    failed = await _failed(aws, arn, "e3")
    await create_queue(aws.sqs, "second")
    dlq = await create_queue(aws.sqs, "states-dlq")
    await create_queue(aws.sqs, "parked")
    stopped = (await aws.sfn.describe_execution(executionArn=failed))["stopDate"]
    event = json.loads(_status_change(failed, arn))
    event["detail"]["stopDate"] = int(stopped.timestamp() * 1000)
    stale = _behind(failed, arn, status="RUNNING", redriveCount=0)
    proxy.add(Rule("states", "DescribeExecution", "answer", extra=stale, times=1))
    worker = _auto(proxy, worker_stack, arn)
    poller = await worker.poller("states")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(event))

    await run_until(poller, lambda: worker.settled("states", "deleted") == 1)

    assert worker.settled("states", "deferred") == 1
    await wait_for(lambda: _status(aws, failed, "SUCCEEDED"))
    assert await depth(aws.sqs, second) == 1


async def test_a_stale_redrive_count_is_read_again_not_sent(aws, proxy, worker_stack):
    """The execution's second failure, read as its first (count 0, the first stop): the first
    failure's token would be answered as then, nothing redriven. Read again instead."""
    arn, _, second = await _machine(aws)
    failed = await _failed(aws, arn, "e4")
    first = await aws.sfn.describe_execution(executionArn=failed)
    await aws.sfn.redrive_execution(executionArn=failed, clientToken="by-a-person")
    await wait_for(lambda: _status(aws, failed, "FAILED"))  # failed again
    await create_queue(aws.sqs, "second")
    now = await aws.sfn.describe_execution(executionArn=failed)
    event = json.loads(_status_change(failed, arn))
    event["detail"]["stopDate"] = int(now["stopDate"].timestamp() * 1000)
    stale = _behind(
        failed, arn, status="FAILED", redriveCount=0, stopDate=first["stopDate"].timestamp()
    )
    proxy.add(Rule("states", "DescribeExecution", "answer", extra=stale, times=1))
    dlq = await create_queue(aws.sqs, "states-dlq")
    await create_queue(aws.sqs, "parked")
    worker = _auto(proxy, worker_stack, arn)
    poller = await worker.poller("states")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(event))

    await run_until(poller, lambda: worker.settled("states", "deleted") == 1)

    await wait_for(lambda: _status(aws, failed, "SUCCEEDED"))
    assert (await aws.sfn.describe_execution(executionArn=failed))["redriveCount"] == 2
    assert await depth(aws.sqs, second) == 1


async def test_an_earlier_execution_of_another_input_does_not_stand_for_this_one(
    aws, proxy, worker_stack
):
    """`rw-o-1` runs (or ran) `v: 1`; the message now says `v: 2` (edited, or transformed
    anew): `v: 2` must run, under the next name."""
    wait = {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 1, "End": True}}}
    machine = await aws.sfn.create_state_machine(
        name="slow", definition=json.dumps(wait), roleArn=ROLE_ARN
    )
    arn = machine["stateMachineArn"]
    await aws.sfn.start_execution(
        stateMachineArn=arn, name="rw-o-1", input='{"order": "o-1", "v": 1}'
    )
    dlq = await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "parked")
    worker = await _worker(proxy, worker_stack, arn, {"idempotency_key": "body.order"})
    poller = await worker.poller("orders")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": "o-1", "v": 2}')

    await run_until(poller, lambda: worker.settled("orders", "deleted") == 1)

    later = await aws.sfn.describe_execution(
        executionArn=arn.replace(":stateMachine:", ":execution:") + ":rw-o-1-1"
    )
    assert (json.loads(later["input"]), later["status"]) == ({"order": "o-1", "v": 2}, "SUCCEEDED")
