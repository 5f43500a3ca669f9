"""Trace continuity (SPEC.md): a DLQ message's X-Ray trace header goes with its delivery, so
the retry joins the trace that failed; a message without one gets none."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Worker, make_settings
from worker.emulator import ROLE_ARN, create_queue

pytestmark = pytest.mark.anyio

TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


async def _send_two(aws, dlq: str) -> None:
    """One message with a trace header, one without."""
    trace = {"AWSTraceHeader": {"DataType": "String", "StringValue": TRACE}}
    await aws.sqs.send_message(
        QueueUrl=dlq, MessageBody=json.dumps({"traced": True}), MessageSystemAttributes=trace
    )
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"traced": False}))


async def _run(worker: Worker, name: str) -> None:
    poller = await worker.poller(name)
    while worker.settled(name, "deleted") < 2:
        await poller.run_once()


async def test_a_started_execution_carries_the_messages_trace(aws, proxy, worker_stack):
    definition = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
    machine = await aws.sfn.create_state_machine(
        name="traced", definition=definition, roleArn=ROLE_ARN
    )
    dlq = await create_queue(aws.sqs, "traced-dlq")
    await create_queue(aws.sqs, "parked")
    target = {"kind": "stepfunctions", "state_machine_arn": machine["stateMachineArn"]}
    worker = Worker(
        make_settings(proxy.url, {"t": {"name": "traced-dlq", "target": target}}), worker_stack
    )
    await _send_two(aws, dlq)
    await _run(worker, "t")
    started = {
        json.loads(r["input"])["traced"]: r for r in proxy.requests("states", "StartExecution")
    }
    assert started[True]["traceHeader"] == TRACE
    assert "traceHeader" not in started[False]


async def test_a_put_event_carries_the_messages_trace(aws, proxy, worker_stack):
    dlq = await create_queue(aws.sqs, "events-dlq")
    await create_queue(aws.sqs, "parked")
    target = {"kind": "eventbridge", "event_bus": "default"}
    worker = Worker(
        make_settings(proxy.url, {"e": {"name": "events-dlq", "target": target}}), worker_stack
    )
    await _send_two(aws, dlq)
    await _run(worker, "e")
    entries = [e for r in proxy.requests("events", "PutEvents") for e in r["Entries"]]
    by_trace = {json.loads(e["Detail"])["traced"]: e for e in entries}
    assert by_trace[True]["TraceHeader"] == TRACE
    assert "TraceHeader" not in by_trace[False]


def test_a_trace_header_the_target_would_refuse_is_left_out():
    """Step Functions takes at most 256 ASCII characters (EventBridge 500): a longer or odd
    one would fail the delivery, and park a message that has nothing wrong with it."""
    from worker.core.envelope import DlqMessage
    from worker.targets.base import Delivery, trace_of

    def of(trace: str) -> Delivery:
        return Delivery(DlqMessage("m", "r", "{}", trace_header=trace), 1)

    assert trace_of(of(TRACE), 256) == TRACE
    assert trace_of(of("Root=" + "1" * 300), 256) is None
    assert trace_of(of("Root=1-é"), 256) is None
