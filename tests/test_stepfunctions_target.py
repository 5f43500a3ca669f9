"""Step Functions target: a replayed DLQ message never starts a second execution."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import depth, drain
from worker.emulator import ROLE_ARN, create_queue
from worker.emulator.proxy import Rule
from worker.targets.stepfunctions import execution_name

pytestmark = pytest.mark.anyio

DEFINITION = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})


@pytest.mark.parametrize(
    ("message_id", "retry"),
    [("0f1e2d3c-aaaa-bbbb-cccc-1234567890ab", 0), ("x" * 200, 0), ("a b/c:d", 3)],
)
def test_execution_name_is_deterministic_short_and_safe(message_id, retry):
    name = execution_name(message_id, retry)
    assert name == execution_name(message_id, retry)
    assert name != execution_name(message_id + "x", retry)  # two keys never share a name
    assert len(name) <= 80
    assert re.fullmatch(r"[A-Za-z0-9_-]+", name)
    assert (name.endswith(f"-{retry}")) == bool(retry)


async def _setup(aws, proxy, worker_stack, policy=None, **target):
    machine = await aws.sfn.create_state_machine(
        name="fulfil", definition=DEFINITION, roleArn=ROLE_ARN
    )
    arn = machine["stateMachineArn"]
    dlq = await create_queue(aws.sqs, "fulfil-dlq")
    parked = await create_queue(aws.sqs, "parked")
    queues = {
        "fulfil": {
            "name": "fulfil-dlq",
            "target": {"kind": "stepfunctions", "state_machine_arn": arn, **target},
            "policy": policy or {},
        }
    }
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    return worker, await worker.poller("fulfil"), arn, dlq, parked


async def test_replaying_the_same_dlq_message_starts_one_execution(aws, proxy, worker_stack):
    worker, poller, arn, dlq, _ = await _setup(aws, proxy, worker_stack)
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 7}')
    # The first receive delivers; the delete "fails" so the same message comes back, as
    # after a crash between StartExecution and DeleteMessage.
    proxy.add(Rule("sqs", "DeleteMessageBatch", "fail_entries", entries=1, times=3))
    await poller.run_once()
    assert await depth(aws.sqs, dlq) == 1
    [entry] = proxy.requests("sqs", "DeleteMessageBatch")[0]["Entries"]
    # the lease ends (as it would after the visibility timeout)
    await aws.sqs.change_message_visibility(
        QueueUrl=dlq, ReceiptHandle=entry["ReceiptHandle"], VisibilityTimeout=0
    )

    await poller.run_once()

    executions = (await aws.sfn.list_executions(stateMachineArn=arn))["executions"]
    assert len(executions) == 1
    assert proxy.count("states", "StartExecution") == 2
    assert worker.settled("fulfil", "deleted") == 2
    assert await depth(aws.sqs, dlq) == 0


async def test_input_that_is_not_json_is_parked(aws, proxy, worker_stack):
    _, poller, _, dlq, parked = await _setup(aws, proxy, worker_stack)
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="not json")

    await poller.run_once()

    assert proxy.count("states", "StartExecution") == 0
    [message] = await drain(aws.sqs, parked)
    assert (
        message["MessageAttributes"]["retry-worker.error"]["StringValue"] == "InvalidExecutionInput"
    )
    assert message["MessageAttributes"]["retry-worker.reason"]["StringValue"] == "unparseable"


async def test_a_failed_execution_parks_with_its_error_and_cause(aws, proxy, worker_stack):
    """Wait mode: what DescribeExecution says of the failure (`error`, `cause`) is parked with
    the message (the emulator's executions never fail: the proxy answers as a failed one)."""
    _, poller, arn, dlq, parked = await _setup(
        aws, proxy, worker_stack, {"max_attempts": 1}, wait_for_completion=True
    )
    failed = {"status": "FAILED", "error": "Payment.Declined", "cause": "card 4242 declined"}
    proxy.add(
        Rule("states", "DescribeExecution", "answer", extra={"stateMachineArn": arn, **failed})
    )
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 8}')

    await poller.run_once()

    [message] = await drain(aws.sqs, parked)
    said = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert said["retry-worker.error"] == "ExecutionFailed"
    assert said["retry-worker.error-type"] == "Payment.Declined"
    assert said["retry-worker.error-message"] == "card 4242 declined"
