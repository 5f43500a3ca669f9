"""Faults as AWS makes them: the request was carried out, the answer was lost (a 500, a reset
connection, a read timeout), and receipt handles that went stale. Every message ends in exactly
one final place — delivered (a duplicate at most per lost answer) or parked — and none stays
in its DLQ."""

from __future__ import annotations

import json
import time
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

import aiobotocore.session
import aiohttp
import anyio
import pytest
from botocore.exceptions import ClientError

from tests.conftest import Worker, make_settings
from tests.helpers import depth, drain, wait_for
from worker.aws.sqs import EntryFailure
from worker.dlq.batch import lease_gone
from worker.emulator import ROLE_ARN, create_function, create_queue, queue_arn
from worker.emulator.proxy import Rule

pytestmark = pytest.mark.anyio

MESSAGES = 3
DEFINITION = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})


async def until_empty(sqs: Any, worker: Worker, dlq: str, timeout: float = 40) -> None:
    """Run the queue's receive cycles until its DLQ is empty (in flight included)."""
    poller = await worker.poller("q")
    deadline = time.monotonic() + timeout
    while await depth(sqs, dlq):
        assert time.monotonic() < deadline, "messages stuck in the DLQ"
        await poller.run_once()


async def setup(aws, kind: str) -> tuple[dict[str, Any], Any]:
    """The target of `kind` and a way to read what it was given (one id per delivery)."""
    if kind == "sqs":
        out = await create_queue(aws.sqs, "out")

        async def given() -> list[int]:
            return [json.loads(m["Body"])["n"] for m in await drain(aws.sqs, out)]

        return {"kind": "sqs", "queue": "out"}, given
    if kind == "lambda":
        await create_function(aws.lambda_, "fn")
        return {"kind": "lambda", "function": "fn"}, None
    if kind == "stepfunctions":
        machine = await aws.sfn.create_state_machine(
            name="sm", definition=DEFINITION, roleArn=ROLE_ARN
        )
        arn = machine["stateMachineArn"]

        async def started() -> list[int]:
            runs = (await aws.sfn.list_executions(stateMachineArn=arn))["executions"]
            inputs = [
                await aws.sfn.describe_execution(executionArn=r["executionArn"]) for r in runs
            ]
            return [json.loads(d["input"])["n"] for d in inputs]

        return {"kind": "stepfunctions", "state_machine_arn": arn}, started
    seen = await create_queue(aws.sqs, "seen")
    if kind == "sns":
        sns = await aws.client("sns")
        topic = (await sns.create_topic(Name="events"))["TopicArn"]
        await sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=await queue_arn(aws.sqs, seen),
            Attributes={"RawMessageDelivery": "true"},
        )
        target = {"kind": "sns", "topic_arn": topic}
    else:
        events = await aws.client("events")
        await events.create_event_bus(Name="bus")
        await events.put_rule(
            Name="all", EventBusName="bus", EventPattern=json.dumps({"source": ["shop"]})
        )
        await events.put_targets(
            Rule="all",
            EventBusName="bus",
            Targets=[{"Id": "q", "Arn": await queue_arn(aws.sqs, seen)}],
        )
        target = {"kind": "eventbridge", "event_bus": "bus"}

    async def received() -> list[int]:
        bodies = [json.loads(m["Body"]) for m in await drain(aws.sqs, seen)]
        return [b.get("detail", b)["n"] for b in bodies]

    return target, received


def event(n: int) -> str:
    return json.dumps(
        {"version": "0", "id": f"e{n}", "detail-type": "T", "source": "shop", "detail": {"n": n}}
    )


CALLS = {
    "sqs": ("sqs", "SendMessageBatch"),
    "lambda": ("lambda", "Invoke"),
    "stepfunctions": ("states", "StartExecution"),
    "sns": ("sns", "PublishBatch"),
    "eventbridge": ("events", "PutEvents"),
}


@pytest.mark.parametrize("kind", list(CALLS))
@pytest.mark.parametrize("lost", ["error", "reset"])
async def test_a_delivery_whose_answer_was_lost_is_never_lost_itself(
    aws, proxy, worker_stack, kind, lost
):
    target, given = await setup(aws, kind)
    dlq = await create_queue(aws.sqs, "dlq")
    parked = await create_queue(aws.sqs, "parked")
    for n in range(MESSAGES):
        body = event(n) if kind == "eventbridge" else json.dumps({"n": n})
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody=body)
    service, operation = CALLS[kind]
    fault = proxy.add(Rule(service, operation, lost, after=True, times=1))
    worker = Worker(
        make_settings(proxy.url, {"q": {"name": "dlq", "target": target}}), worker_stack
    )

    await until_empty(aws.sqs, worker, dlq)

    assert fault.applied == 1
    if given is None:  # Lambda: what the function accepted, as the proxy saw it
        delivered = [b["n"] for b in proxy.accepted_requests("lambda", "Invoke")]
    else:
        delivered = await given()
    counts = Counter(delivered)
    assert set(counts) == set(range(MESSAGES)), f"lost: {set(range(MESSAGES)) - set(counts)}"
    # A lost answer repeats at most the request it answered (Step Functions names the
    # execution by the message: a repeat is the same execution).
    repeats = sum(counts.values()) - MESSAGES
    assert repeats == {"stepfunctions": 0, "lambda": 1}.get(kind, MESSAGES)
    assert await depth(aws.sqs, parked) == 0


@pytest.mark.parametrize("lost", ["error", "reset"])
async def test_a_delete_whose_answer_was_lost_leaves_no_message_behind(
    aws, proxy, worker_stack, lost
):
    """DeleteMessageBatch carried out, its answer lost: the worker cannot tell, tries again
    (a stale handle now); the message is gone once, never delivered a second time."""
    target, given = await setup(aws, "sqs")
    dlq = await create_queue(aws.sqs, "dlq")
    await create_queue(aws.sqs, "parked")
    for n in range(MESSAGES):
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"n": n}))
    fault = proxy.add(Rule("sqs", "DeleteMessageBatch", lost, after=True, times=1))
    worker = Worker(
        make_settings(proxy.url, {"q": {"name": "dlq", "target": target}}), worker_stack
    )

    await until_empty(aws.sqs, worker, dlq)

    assert fault.applied == 1
    assert sorted(await given()) == list(range(MESSAGES))  # each once: the delete had happened


def refused_handles(operation: str, times: int | None = None) -> Rule:
    """Every entry of `operation` refused for its handle, as SQS does a stale one."""
    return Rule(
        "sqs",
        operation,
        "fail_entries",
        code="ReceiptHandleIsInvalid",
        times=times,
        entries=10,
        extra={"SenderFault": True},
    )


def with_lease(endpoint: str, target: dict[str, Any], seconds: int) -> Any:
    receive = {"batch_size": 10, "wait_seconds": 1, "visibility_timeout_seconds": seconds}
    return make_settings(
        endpoint, {"q": {"name": "dlq", "target": target}}, defaults={"receive": receive}
    )


async def test_a_stale_receipt_handle_on_settle_leaves_the_message_to_come_back(
    aws, proxy, worker_stack
):
    """A delete refused for its handle (`ReceiptHandleIsInvalid`, a sender fault, never
    retried): the message is not deleted, comes back when its visibility ends, and is
    delivered and deleted then — a duplicate, never a loss."""
    target, given = await setup(aws, "sqs")
    dlq = await create_queue(aws.sqs, "dlq")
    await create_queue(aws.sqs, "parked")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"n": 0}))
    stale = proxy.add(refused_handles("DeleteMessageBatch", times=1))
    worker = Worker(with_lease(proxy.url, target, seconds=2), worker_stack)

    await until_empty(aws.sqs, worker, dlq)

    assert stale.applied == 1
    assert await given() == [0, 0]  # delivered again when it came back; nothing left behind


async def test_a_stale_receipt_handle_on_the_heartbeat_ends_the_lease(aws, proxy, worker_stack):
    """The lease extension refused for a stale handle: the batch stops holding the message
    (another receive may have it) instead of asking again every second, and the message ends
    delivered, none left behind."""
    target, _ = await setup(aws, "lambda")
    await create_queue(aws.sqs, "parked")
    dlq = await create_queue(aws.sqs, "dlq")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"n": 0}))
    proxy.add(Rule("lambda", "Invoke", "delay", seconds=5.5, times=1))
    stale = proxy.add(refused_handles("ChangeMessageVisibilityBatch"))
    worker = Worker(with_lease(proxy.url, target, seconds=6), worker_stack)

    await until_empty(aws.sqs, worker, dlq)

    # Refused once: a handle SQS calls invalid is not asked about again every second.
    assert stale.applied == 1
    invoked = [b["n"] for b in proxy.accepted_requests("lambda", "Invoke")]
    assert set(invoked) == {0}


async def test_a_cleared_proxy_repeats_the_same_faults(proxy):
    """Each test starts from the same random state: one test's faults never shift the next's."""
    headers = {
        "Authorization": "AWS4-HMAC-SHA256 Credential=k/20260101/us-east-1/sqs/aws4_request",
        "X-Amz-Target": "AmazonSQS.ListQueues",
        "Content-Type": "application/x-amz-json-1.0",
    }

    async def pattern() -> list[int]:
        proxy.add(Rule("sqs", "ListQueues", "error", probability=0.5))
        async with aiohttp.ClientSession() as session:
            statuses = []
            for _ in range(16):
                async with session.post(proxy.url + "/", data=b"{}", headers=headers) as answer:
                    statuses.append(answer.status)
        return statuses

    first = await pattern()
    proxy.upstream_errors.append(("sqs", "ListQueues", "from an earlier test"))
    proxy.clear()
    assert proxy.upstream_errors == []
    assert await pattern() == first
    assert 500 in first
    assert any(s != 500 for s in first)


async def test_an_invoke_answered_after_the_read_timeout_is_retried_not_lost(
    aws, proxy, worker_stack
):
    """The function ran; its answer came after the client gave up (a read timeout): the
    worker retries it (the function sees the same idempotency key twice), never parks it."""
    target, _ = await setup(aws, "lambda")
    dlq = await create_queue(aws.sqs, "dlq")
    parked = await create_queue(aws.sqs, "parked")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"n": 0}))
    late = proxy.add(Rule("lambda", "Invoke", "delay", seconds=3, after=True, times=1))
    settings = make_settings(
        proxy.url,
        {"q": {"name": "dlq", "target": target}},
        aws={"read_timeout_seconds": 1, "sdk_max_attempts": 1},
    )
    worker = Worker(settings, worker_stack)

    await until_empty(aws.sqs, worker, dlq)

    assert late.applied == 1
    invoked = [b["n"] for b in proxy.accepted_requests("lambda", "Invoke")]
    assert invoked == [0, 0]  # ran, its answer lost; ran again and answered
    assert await depth(aws.sqs, parked) == 0


async def test_a_held_request_ends_with_its_test_and_never_reaches_aws(proxy):
    """A `delay` rule that holds a request (a kill test holds a delete): `clear()` ends it
    unanswered and unforwarded, so it neither reaches the emulator later nor stays counted
    in flight for the next test."""
    headers = {
        "Authorization": "AWS4-HMAC-SHA256 Credential=k/20260101/us-east-1/sqs/aws4_request",
        "X-Amz-Target": "AmazonSQS.ListQueues",
        "Content-Type": "application/x-amz-json-1.0",
    }
    proxy.add(Rule("sqs", "ListQueues", "delay", seconds=3600))
    outcome: list[str] = []

    async def ask() -> None:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.post(proxy.url + "/", data=b"{}", headers=headers) as answer:
                    outcome.append(str(answer.status))
            except aiohttp.ClientError as exc:
                outcome.append(type(exc).__name__)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask)
        await wait_for(lambda: proxy.in_flight[("sqs", "ListQueues")] == 1, timeout=10)
        proxy.clear()
        await wait_for(lambda: proxy.in_flight[("sqs", "ListQueues")] == 0, timeout=10)
    assert outcome == ["ServerDisconnectedError"]
    assert proxy.accepted_requests("sqs", "ListQueues") == []


async def test_the_emulator_treats_a_stale_receipt_handle_as_sqs_does(aws, proxy):
    """Only the latest receive's handle acts: an earlier one is refused for a visibility
    change and, for a delete, answered success while nothing is deleted (moto alone took both;
    worker/emulator/fidelity.py)."""
    async with AsyncExitStack() as stack:
        session = aiobotocore.session.get_session()
        sqs = await stack.enter_async_context(
            session.create_client("sqs", region_name="us-east-1", endpoint_url=proxy.url)
        )
        url = await create_queue(aws.sqs, "handles")
        await sqs.send_message(QueueUrl=url, MessageBody="x")
        [first] = (await sqs.receive_message(QueueUrl=url, VisibilityTimeout=0))["Messages"]
        [second] = (await sqs.receive_message(QueueUrl=url, VisibilityTimeout=30))["Messages"]
        stale, latest = first["ReceiptHandle"], second["ReceiptHandle"]
        entry = {"Id": "1", "ReceiptHandle": stale, "VisibilityTimeout": 0}
        changed = await sqs.change_message_visibility_batch(QueueUrl=url, Entries=[entry])
        assert [(f["Code"], f["SenderFault"]) for f in changed["Failed"]] == [
            ("InvalidParameterValue", True)
        ]
        with pytest.raises(ClientError, match="InvalidParameterValue"):
            await sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=stale, VisibilityTimeout=0
            )
        deleted = await sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": "1", "ReceiptHandle": stale}]
        )
        assert [s["Id"] for s in deleted["Successful"]] == ["1"]
        assert await depth(aws.sqs, url) == 1  # "success", and the message is still there
        await sqs.delete_message(QueueUrl=url, ReceiptHandle=latest)
        assert await depth(aws.sqs, url) == 0


def test_only_a_refusal_of_the_handle_itself_ends_a_lease():
    gone = EntryFailure(
        "InvalidParameterValue", True, "Value h for parameter ReceiptHandle is invalid."
    )
    assert lease_gone(gone)
    assert lease_gone(EntryFailure("ReceiptHandleIsInvalid", True))
    too_long = "Value 50000 for parameter VisibilityTimeout is invalid. Reason: beyond the limit"
    assert not lease_gone(EntryFailure("InvalidParameterValue", True, too_long))
    assert not lease_gone(EntryFailure("InvalidParameterValue", False))  # a whole call failed
    assert not lease_gone(EntryFailure("InternalError", False))
