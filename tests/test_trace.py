"""Trace continuity (SPEC.md): a DLQ message's X-Ray trace header goes with its delivery, so
the retry joins the trace that failed; a message without one gets none."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import drain, run_until
from tests.test_explain import _cli
from worker.emulator import ROLE_ARN, create_function, create_queue

pytestmark = pytest.mark.anyio

TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


async def _send_two(aws, dlq: str) -> None:
    """One message with a trace header, one without."""
    trace = {"AWSTraceHeader": {"DataType": "String", "StringValue": TRACE}}
    await aws.sqs.send_message(
        QueueUrl=dlq, MessageBody=json.dumps({"traced": True}), MessageSystemAttributes=trace
    )
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"traced": False}))


async def _deliver_two(aws: Any, proxy: Any, worker_stack: Any, target: dict[str, Any]) -> None:
    """One traced message and one without, through a queue with this target, both delivered."""
    dlq = await create_queue(aws.sqs, "two-dlq")
    await create_queue(aws.sqs, "parked")
    settings = make_settings(proxy.url, {"q": {"name": "two-dlq", "target": target}})
    await _send_two(aws, dlq)
    await _run(Worker(settings, worker_stack), "q")


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
    await _deliver_two(aws, proxy, worker_stack, {"kind": "eventbridge", "event_bus": "default"})
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


def _traced_by_body(proxy: Any, service: str, operation: str) -> dict[bool, str | None]:
    """{traced?: the X-Amzn-Trace-Id header of the request that carried that message}."""
    calls = zip(proxy.requests(service, operation), proxy.headers(service, operation), strict=True)
    return {
        (json.loads(body) if isinstance(body, str) else body)["traced"]: h.get("x-amzn-trace-id")
        for body, h in calls
    }


async def test_an_invocation_carries_the_messages_trace_as_its_header(aws, proxy, worker_stack):
    await create_function(aws.lambda_, "traced")
    await _deliver_two(aws, proxy, worker_stack, {"kind": "lambda", "function": "traced"})
    assert _traced_by_body(proxy, "lambda", "Invoke") == {True: TRACE, False: None}


async def test_a_publish_carries_the_messages_trace_and_no_other(aws, proxy, worker_stack):
    """PublishBatch takes one trace (the header): a traced message goes in a request of its
    own; the untraced ones together, without one."""
    topic = (await (await aws.client("sns")).create_topic(Name="traced"))["TopicArn"]
    dlq = await create_queue(aws.sqs, "topic-dlq")
    await create_queue(aws.sqs, "parked")
    trace = {"AWSTraceHeader": {"DataType": "String", "StringValue": TRACE}}
    other = TRACE.replace("bd862e3f", "00000000")
    await aws.sqs.send_message_batch(
        QueueUrl=dlq,
        Entries=[
            {"Id": "a", "MessageBody": '{"n": 1}'},
            {"Id": "b", "MessageBody": '{"n": 2}', "MessageSystemAttributes": trace},
            {"Id": "c", "MessageBody": '{"n": 3}'},
            {
                "Id": "d",
                "MessageBody": '{"n": 4}',
                "MessageSystemAttributes": {
                    "AWSTraceHeader": {"DataType": "String", "StringValue": other}
                },
            },
        ],
    )
    target = {"kind": "sns", "topic_arn": topic}
    settings = make_settings(proxy.url, {"s": {"name": "topic-dlq", "target": target}})
    worker = Worker(settings, worker_stack)
    poller = await worker.poller("s")
    while worker.settled("s", "deleted") < 4:
        await poller.run_once()

    requests = zip(
        proxy.requests("sns", "PublishBatch"), proxy.headers("sns", "PublishBatch"), strict=True
    )
    published = {}
    for form, headers in requests:  # the query protocol's flat form
        messages = [v for k, v in form.items() if k.endswith(".Message")]
        assert len(messages) == 1 or "x-amzn-trace-id" not in headers  # a trace: alone
        for message in messages:
            published[json.loads(message)["n"]] = headers.get("x-amzn-trace-id")
    assert published == {1: None, 2: TRACE, 3: None, 4: other}


async def test_a_replay_keeps_the_trace(aws, proxy, worker_stack, tmp_path):
    """Parked with its trace, replayed to the DLQ (the copy keeps AWSTraceHeader, the backup
    line has it) and to the target (the invocation carries it)."""
    await create_function(aws.lambda_, "orders")
    dlq = await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "parked")
    queue = {
        "name": "orders-dlq",
        "target": {"kind": "lambda", "function": "orders"},
        "rules": [{"when": "`true`", "action": "park", "reason": "held"}],
    }
    settings = make_settings(proxy.url, {"orders": queue})
    worker = Worker(settings, worker_stack)
    poller = await worker.poller("orders")
    await _send_two(aws, dlq)
    await run_until(poller, lambda: worker.settled("orders", "parked") == 2)
    cli = _cli(tmp_path, settings.model_dump(mode="json"))

    backup = tmp_path / "to-dlq.jsonl"
    done = await cli("parked", "replay", "orders", "--to", "dlq", "--yes", "--backup", str(backup))
    assert done.returncode == 0, done.stderr
    back = {
        json.loads(m["Body"])["traced"]: m["Attributes"].get("AWSTraceHeader")
        for m in await drain(aws.sqs, dlq, delete=True)
    }
    assert back == {True: TRACE, False: None}
    lines = [json.loads(line) for line in backup.read_text().splitlines()]
    assert sorted(line.get("trace_header") or "" for line in lines) == ["", TRACE]
    restored = await create_queue(aws.sqs, "restored")
    done = await cli("restore", str(backup), "--to", "restored", "--yes")
    assert done.returncode == 0, done.stderr
    again = {
        json.loads(m["Body"])["traced"]: m["Attributes"].get("AWSTraceHeader")
        for m in await drain(aws.sqs, restored)
    }
    assert again == {True: TRACE, False: None}

    await _send_two(aws, dlq)  # parked again, then replayed to the target
    await run_until(poller, lambda: worker.settled("orders", "parked") == 4)
    proxy.forget()
    backup = tmp_path / "to-target.jsonl"
    done = await cli(
        "parked", "replay", "orders", "--to", "target", "--yes", "--backup", str(backup)
    )
    assert done.returncode == 0, done.stderr
    assert _traced_by_body(proxy, "lambda", "Invoke") == {True: TRACE, False: None}


async def test_a_sent_message_and_a_parked_one_keep_the_trace(aws, proxy, worker_stack):
    """The SQS target sends the trace as the entry's AWSTraceHeader; a parked copy keeps it."""
    out = await create_queue(aws.sqs, "out")
    dlq = await create_queue(aws.sqs, "sqs-dlq")
    parked = await create_queue(aws.sqs, "parked")
    queue = {
        "name": "sqs-dlq",
        "target": {"kind": "sqs", "queue": "out"},
        "rules": [{"when": "body.n == `2`", "action": "park", "reason": "held"}],
    }
    worker = Worker(make_settings(proxy.url, {"q": queue}), worker_stack)
    poller = await worker.poller("q")
    trace = {"AWSTraceHeader": {"DataType": "String", "StringValue": TRACE}}
    for n in (1, 2):
        await aws.sqs.send_message(
            QueueUrl=dlq,
            MessageBody=json.dumps({"traced": True, "n": n}),
            MessageSystemAttributes=trace,
        )
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"traced": False, "n": 3}))
    await run_until(
        poller, lambda: worker.settled("q", "deleted") + worker.settled("q", "parked") == 3
    )

    sent = {
        json.loads(m["Body"])["traced"]: m["Attributes"].get("AWSTraceHeader")
        for m in await drain(aws.sqs, out)
    }
    assert sent == {True: TRACE, False: None}
    [kept] = await drain(aws.sqs, parked)
    assert kept["Attributes"]["AWSTraceHeader"] == TRACE
