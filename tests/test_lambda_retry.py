"""Lambda target through the real poller: retries with backoff, exhaustion, park_on."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from tests.conftest import Aws, Worker, make_settings
from tests.helpers import depth, drain, run_until, wait_for
from worker.emulator import create_function, create_queue
from worker.emulator.proxy import FaultProxy, Rule

pytestmark = pytest.mark.anyio


async def _setup(aws: Aws, proxy: FaultProxy, stack: AsyncExitStack, **policy: object) -> tuple:
    await create_function(aws.lambda_, "orders")
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parked = await create_queue(aws.sqs, "parked")
    queue = {"name": "orders-dlq", "target": {"kind": "lambda", "function": "orders"}}
    if policy:
        queue["policy"] = policy
    worker = Worker(make_settings(proxy.url, {"orders": queue}), stack)
    return worker, await worker.poller("orders"), dlq, parked


async def test_lambda_failing_twice_is_delivered_on_attempt_three(aws, proxy, worker_stack):
    worker, poller, dlq, parked = await _setup(
        aws, proxy, worker_stack, backoff={"initial_seconds": 1, "multiplier": 2, "jitter": "equal"}
    )
    proxy.add(Rule("lambda", "Invoke", "function_error", times=2))
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 42}')

    await run_until(poller, lambda: worker.settled("orders", "deleted") == 1)

    assert proxy.count("lambda", "Invoke") == 3
    assert worker.settled("orders", "deferred") == 2
    timeouts = [
        e["VisibilityTimeout"]
        for body in proxy.requests("sqs", "ChangeMessageVisibilityBatch")
        for e in body["Entries"]
    ]
    # attempt 1: base 1 s, equal jitter in [0.5, 1]; attempt 2: base 2 s, in [1, 2] (rounded up)
    assert len(timeouts) == 2
    assert timeouts[0] == 1
    assert 1 <= timeouts[1] <= 2
    assert await depth(aws.sqs, dlq) == 0
    assert await depth(aws.sqs, parked) == 0


async def test_always_failing_message_is_parked_after_max_attempts(aws, proxy, worker_stack):
    worker, poller, dlq, parked = await _setup(
        aws, proxy, worker_stack, max_attempts=3, backoff={"initial_seconds": 0}
    )
    proxy.add(Rule("lambda", "Invoke", "function_error"))
    attributes = {"tenant": {"DataType": "String", "StringValue": "acme"}}
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='"poison"', MessageAttributes=attributes)

    await run_until(poller, lambda: worker.settled("orders", "parked") == 1)

    assert proxy.count("lambda", "Invoke") == 3
    assert await depth(aws.sqs, dlq) == 0
    [message] = await drain(aws.sqs, parked)
    assert message["Body"] == '"poison"'
    attrs = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attrs["tenant"] == "acme"
    assert attrs["retry-worker.reason"] == "max_attempts"
    assert attrs["retry-worker.attempts"] == "3"
    assert attrs["retry-worker.error"] == "FunctionError.Unhandled"
    assert attrs["retry-worker.source-queue"] == dlq
    parked_at = datetime.fromisoformat(attrs["retry-worker.parked-at"])
    assert parked_at.utcoffset() == timedelta(0)
    assert abs((datetime.now(UTC) - parked_at).total_seconds()) < 60


async def test_message_with_ten_attributes_is_parked_without_losing_any(aws, proxy, worker_stack):
    worker, poller, dlq, parked = await _setup(aws, proxy, worker_stack, park_on=["TestPermanent"])
    proxy.add(Rule("lambda", "Invoke", "error", status=400, code="TestPermanent"))
    attributes = {f"a{i}": {"DataType": "String", "StringValue": f"v{i}"} for i in range(9)}
    attributes["bin"] = {"DataType": "Binary", "BinaryValue": b"\x00\xff\x10"}
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='"payload"', MessageAttributes=attributes)

    await run_until(poller, lambda: worker.settled("orders", "parked") == 1)

    [message] = await drain(aws.sqs, parked)
    envelope = json.loads(message["Body"])
    assert envelope["body"] == '"payload"'
    assert envelope["retry_worker"]["reason"] == "permanent_error"
    assert envelope["retry_worker"]["error"] == "TestPermanent"
    assert set(envelope["attributes"]) == set(attributes)
    assert envelope["attributes"]["bin"]["BinaryValue"] == "AP8Q"  # base64 of 00 ff 10
    meta = json.loads(message["MessageAttributes"]["retry-worker.meta"]["StringValue"])
    assert meta["reason"] == "permanent_error"


async def test_park_on_error_is_parked_on_first_failure(aws, proxy, worker_stack):
    worker, poller, dlq, parked = await _setup(
        aws, proxy, worker_stack, park_on=["FunctionError.Unhandled"]
    )
    proxy.add(Rule("lambda", "Invoke", "function_error"))
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='"x"')

    await run_until(poller, lambda: worker.settled("orders", "parked") == 1)

    assert proxy.count("lambda", "Invoke") == 1
    assert worker.settled("orders", "deferred") == 0
    [message] = await drain(aws.sqs, parked)
    assert message["MessageAttributes"]["retry-worker.reason"]["StringValue"] == "permanent_error"


async def test_unknown_error_is_retried(aws, proxy, worker_stack):
    worker, poller, dlq, _ = await _setup(aws, proxy, worker_stack)
    proxy.add(Rule("lambda", "Invoke", "error", status=418, code="SomethingNew", times=1))
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='"x"')

    await run_until(poller, lambda: worker.settled("orders", "deleted") == 1)

    assert worker.settled("orders", "deferred") == 1
    assert worker.settled("orders", "parked") == 0


@pytest.mark.parametrize("extension_takes", [0.0, 0.6])
async def test_lease_is_extended_while_a_slow_target_runs(
    aws, proxy, worker_stack, extension_takes
):
    """The heartbeat keeps its cadence from each extension's start: an extension call that
    takes 0.6 s of a 2 s lease must not push the next one past the lease's safe end."""
    await create_function(aws.lambda_, "slow")
    dlq = await create_queue(aws.sqs, "slow-dlq")
    await create_queue(aws.sqs, "parked")
    queue = {
        "name": "slow-dlq",
        "receive": {"visibility_timeout_seconds": 2, "wait_seconds": 0},
        "target": {"kind": "lambda", "function": "slow"},
    }
    worker = Worker(make_settings(proxy.url, {"slow": queue}), worker_stack)
    poller = await worker.poller("slow")
    proxy.add(Rule("lambda", "Invoke", "delay", seconds=3.5))
    if extension_takes:
        proxy.add(Rule("sqs", "ChangeMessageVisibilityBatch", "delay", seconds=extension_takes))
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="{}")

    def heartbeats() -> int:
        return len(proxy.requests("sqs", "ChangeMessageVisibilityBatch"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run_once)
        await wait_for(lambda: heartbeats() >= 2, timeout=10)
        # past the first 2 s lease: without the heartbeat the message would be visible again
        seen = await aws.sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0)
        assert "Messages" not in seen

    assert worker.settled("slow", "deleted") == 1
    assert proxy.count("lambda", "Invoke") == 1
    for body in proxy.requests("sqs", "ChangeMessageVisibilityBatch"):
        assert [e["VisibilityTimeout"] for e in body["Entries"]] == [2]
    assert await depth(aws.sqs, dlq) == 0


async def test_message_the_parking_queue_refuses_stays_in_the_dlq(aws, proxy, worker_stack):
    worker, poller, dlq, parked = await _setup(aws, proxy, worker_stack, park_on=["Doomed"])
    proxy.add(Rule("lambda", "Invoke", "error", status=400, code="Doomed"))
    proxy.add(Rule("sqs", "SendMessageBatch", "fail_entries", entries=1, times=3))
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='"must-not-vanish"')

    await poller.run_once()

    assert proxy.count("sqs", "SendMessageBatch") == 3  # the parking send, retried
    assert proxy.count("sqs", "DeleteMessageBatch") == 0
    [change] = proxy.requests("sqs", "ChangeMessageVisibilityBatch")
    assert [e["VisibilityTimeout"] for e in change["Entries"]] == [60]
    assert worker.settled("orders", "parked") == 0
    assert await depth(aws.sqs, dlq) == 1
    assert await depth(aws.sqs, parked) == 0


async def test_message_that_would_expire_before_its_next_try_is_parked(aws, proxy, worker_stack):
    await create_function(aws.lambda_, "orders")
    dlq = await create_queue(aws.sqs, "short-dlq", MessageRetentionPeriod="60")
    parked = await create_queue(aws.sqs, "parked")
    queue = {
        "name": "short-dlq",
        "target": {"kind": "lambda", "function": "orders"},
        "policy": {"backoff": {"initial_seconds": 30, "max_seconds": 60}},
    }
    worker = Worker(make_settings(proxy.url, {"short": queue}), worker_stack)
    poller = await worker.poller("short")
    proxy.add(Rule("lambda", "Invoke", "function_error"))
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"late": true}')

    await poller.run_once()

    [message] = await drain(aws.sqs, parked)
    attrs = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attrs["retry-worker.reason"] == "expiring"
    assert attrs["retry-worker.attempts"] == "1"
    assert await depth(aws.sqs, dlq) == 0
