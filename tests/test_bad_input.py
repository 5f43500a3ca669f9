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
        # Lambda refuses a payload that is not JSON (the proxy answers as Lambda does)
        "\t": ("unparseable", "InvalidRequestContentException"),
        "plain text, not JSON": ("unparseable", "InvalidRequestContentException"),
    }
    assert worker.settled("sfn", "deleted") == 1  # the fine one
    assert worker.settled("fn", "parked") == 2  # each tried once: the garbage marker ignored
    assert await depth(aws.sqs, out) == 0
    assert logs.getvalue().count('"attempt_marker": "invalid"') == 1  # the garbage marker


DEEP = "[" * 5000 + "]" * 5000  # valid JSON, nested deeper than Python's parser goes


async def test_a_deeply_nested_body_is_that_message_s_problem_alone(aws, proxy, worker_stack):
    """Issue 27, defect 5: `json.loads` raises RecursionError (not a ValueError) for a body
    nested 5,000 deep; the batch failed, again and again, and every batch-mate was parked
    `max_attempts` without a try. Every parse treats it as "not JSON" and carries on."""
    machine = await aws.sfn.create_state_machine(name="sm", definition=DEFINITION, roleArn=ROLE_ARN)
    await create_function(aws.lambda_, "fn")
    parked = await create_queue(aws.sqs, "parked")
    out = await create_queue(aws.sqs, "out")
    fn_arn = "arn:aws:lambda:us-east-1:123456789012:function:fn"
    record = json.dumps(
        {
            "version": "1.0",
            "requestContext": {"requestId": "r", "functionArn": fn_arn, "condition": "X"},
            "requestPayload": {"fine": "auto"},
            "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
        }
    )
    fine = {
        "sfn": '{"fine": "sfn"}',
        "events": json.dumps({"source": "shop", "detail-type": "X", "detail": {"fine": 1}}),
        "rules": '{"fine": "rules"}',
        "auto": record,
    }
    queues = {
        "sfn": {
            "target": {"kind": "stepfunctions", "state_machine_arn": machine["stateMachineArn"]}
        },
        "events": {"target": {"kind": "eventbridge", "event_bus": "default"}},
        "rules": {
            "target": {"kind": "sqs", "queue": "out"},
            "rules": [{"when": "body.hold == `true`", "action": "park", "reason": "held"}],
        },
        "auto": {"target": {"kind": "auto", "allow": [fn_arn]}},
    }
    dlqs = {}
    for name, queue in queues.items():
        queue["name"] = f"{name}-dlq"
        dlqs[name] = await create_queue(aws.sqs, f"{name}-dlq")
        entries = [{"Id": "deep", "MessageBody": DEEP}, {"Id": "fine", "MessageBody": fine[name]}]
        await aws.sqs.send_message_batch(QueueUrl=dlqs[name], Entries=entries)
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    pollers = [await worker.poller(name) for name in queues]
    deadline = time.monotonic() + 30
    while any([await depth(aws.sqs, q) for q in dlqs.values()]):
        assert time.monotonic() < deadline, "the batch failed and came back"
        async with anyio.create_task_group() as tg:
            for poller in pollers:
                tg.start_soon(poller.run_once)

    for name in ("sfn", "events", "auto"):
        assert worker.settled(name, "deleted") == 1, name  # the batch-mate, on its first try
        assert worker.settled(name, "parked") == 1, name
    # The rule cannot read the deep body (null): it does not match, and SQS takes any text.
    assert sorted(m["Body"] for m in await drain(aws.sqs, out)) == sorted([DEEP, fine["rules"]])
    reasons = sorted(
        (
            m["MessageAttributes"]["retry-worker.reason"]["StringValue"],
            m["MessageAttributes"]["retry-worker.error"]["StringValue"],
        )
        for m in await drain(aws.sqs, parked)
        if m["Body"] == DEEP
    )
    assert reasons == [
        ("no_target", "NoTargetNamed"),
        ("unparseable", "InvalidEventBody"),
        ("unparseable", "InvalidExecutionInput"),
    ]
