"""The bad-input corpus: each case is delivered or parked with a precise reason; the worker
never crashes or stalls."""

from __future__ import annotations

import io
import json
import time

import anyio
import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import depth, drain
from worker.emulator import ROLE_ARN, create_function, create_queue
from worker.logs import configure_logging
from worker.settings import LoggingSettings

pytestmark = pytest.mark.anyio

DEFINITION = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
BIG = json.dumps({"blob": "x" * 300_000})  # over the 256 KB of Step Functions input


async def test_bad_input_corpus(aws, proxy, worker_stack):
    machine = await aws.sfn.create_state_machine(name="sm", definition=DEFINITION, roleArn=ROLE_ARN)
    await create_function(aws.lambda_, "fn")
    one_mib = {"MaximumMessageSize": str(1024 * 1024)}
    sfn_dlq = await create_queue(aws.sqs, "sfn-dlq", **one_mib)
    fn_dlq = await create_queue(aws.sqs, "fn-dlq")
    fifo_dlq = await create_queue(aws.sqs, "to-fifo-dlq")
    out = await create_queue(aws.sqs, "out.fifo", FifoQueue="true")
    parked = await create_queue(aws.sqs, "parked", **one_mib)

    await aws.sqs.send_message(QueueUrl=sfn_dlq, MessageBody="{not json")
    await aws.sqs.send_message(QueueUrl=sfn_dlq, MessageBody=" ")
    await aws.sqs.send_message(QueueUrl=sfn_dlq, MessageBody=BIG)
    await aws.sqs.send_message(QueueUrl=sfn_dlq, MessageBody='{"fine": true}')
    garbage = {
        "retry-worker.attempt": {"DataType": "Number.garbage", "StringValue": "many"},
        "raw": {"DataType": "Binary", "BinaryValue": bytes(range(256))},
        "n": {"DataType": "Number", "StringValue": "-1.5e3"},
    }
    await aws.sqs.send_message(QueueUrl=fn_dlq, MessageBody="\t", MessageAttributes=garbage)
    await aws.sqs.send_message(QueueUrl=fn_dlq, MessageBody="plain text, not JSON")
    await aws.sqs.send_message(QueueUrl=fifo_dlq, MessageBody="no group id here")

    queues = {
        "sfn": {
            "name": "sfn-dlq",
            "target": {"kind": "stepfunctions", "state_machine_arn": machine["stateMachineArn"]},
        },
        "fn": {"name": "fn-dlq", "target": {"kind": "lambda", "function": "fn"}},
        "fifo": {"name": "to-fifo-dlq", "target": {"kind": "sqs", "queue": "out.fifo"}},
    }
    logs = io.StringIO()
    configure_logging(LoggingSettings(format="json"), stream=logs)
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    pollers = {name: await worker.poller(name) for name in queues}
    deadline = time.monotonic() + 30
    while any([await depth(aws.sqs, q) for q in (sfn_dlq, fn_dlq, fifo_dlq)]):
        assert time.monotonic() < deadline, "the worker stalled"
        async with anyio.create_task_group() as tg:
            for poller in pollers.values():
                tg.start_soon(poller.run_once)

    by_body = {}
    for message in await drain(aws.sqs, parked):
        attrs = {k: v.get("StringValue") for k, v in message["MessageAttributes"].items()}
        by_body[message["Body"]] = (attrs["retry-worker.reason"], attrs["retry-worker.error"])
    assert by_body == {
        "{not json": ("unparseable", "InvalidExecutionInput"),
        " ": ("unparseable", "InvalidExecutionInput"),
        BIG: ("too_large", "PayloadTooLarge"),
        "no group id here": ("missing_group_id", "MissingMessageGroupId"),
    }
    assert worker.settled("sfn", "deleted") == 1  # the fine one
    assert worker.settled("fn", "deleted") == 2  # Lambda takes any payload; garbage marker ignored
    assert await depth(aws.sqs, out) == 0
    assert logs.getvalue().count('"attempt_marker": "invalid"') == 1  # the garbage marker
