"""Rules, transforms and hooks through the real poller on the emulator (SPEC.md, Decisions)."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

from tests import decision_hooks
from tests.conftest import Aws, Worker, make_settings
from tests.helpers import depth, drain, run_until, wait_for
from worker.emulator import create_function, create_queue
from worker.emulator.proxy import FaultProxy, Rule

pytestmark = pytest.mark.anyio

BIG = {"when": "body.amount > `10000`", "action": "park", "reason": "manual_review"}
MAINTENANCE = {
    "when": "attributes.ledger == 'maintenance'",
    "action": "defer",
    "delay_seconds": 300,
}


async def _setup(
    aws: Aws, proxy: FaultProxy, stack: AsyncExitStack, **decisions: Any
) -> tuple[Worker, Any, str, str]:
    await create_function(aws.lambda_, "orders")
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parked = await create_queue(aws.sqs, "parked")
    queue = {"name": "orders-dlq", "target": {"kind": "lambda", "function": "orders"}}
    worker = Worker(make_settings(proxy.url, {"orders": {**queue, **decisions}}), stack)
    return worker, await worker.poller("orders"), dlq, parked


def _invoked(proxy: FaultProxy) -> list[Any]:
    return proxy.requests("lambda", "Invoke")


def _meta(message: dict[str, Any]) -> dict[str, str]:
    return {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}


def _decisions(worker: Worker, by: str, action: str) -> float:
    labels = {"queue": "orders", "by": by, "action": action}
    return worker.registry.get_sample_value("retry_worker_decisions_total", labels) or 0.0


async def test_a_rule_parks_without_calling_the_target(aws, proxy, worker_stack):
    worker, poller, dlq, parked = await _setup(aws, proxy, worker_stack, rules=[BIG, MAINTENANCE])
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"id": 1, "amount": 25000}')
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"id": 2, "amount": 5}')

    await run_until(
        poller,
        lambda: (
            worker.settled("orders", "parked") == 1 and worker.settled("orders", "deleted") == 1
        ),
    )

    assert [json.loads(json.dumps(b)) for b in _invoked(proxy)] == [{"id": 2, "amount": 5}]
    [message] = await drain(aws.sqs, parked)
    assert message["Body"] == '{"id": 1, "amount": 25000}'
    meta = _meta(message)
    assert meta["retry-worker.reason"] == "manual_review"
    assert meta["retry-worker.error"] == "Rule.0"
    assert meta["retry-worker.attempts"] == "0"  # nothing was tried
    assert _decisions(worker, "rule", "park") == 1
    assert await depth(aws.sqs, dlq) == 0


async def test_a_rule_defers_by_its_delay_and_it_counts_as_an_attempt(aws, proxy, worker_stack):
    worker, poller, dlq, _parked = await _setup(aws, proxy, worker_stack, rules=[BIG, MAINTENANCE])
    ledger = {"ledger": {"DataType": "String", "StringValue": "maintenance"}}
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"id": 3}', MessageAttributes=ledger)

    await run_until(poller, lambda: worker.settled("orders", "deferred") == 1)

    assert _invoked(proxy) == []
    [entry] = [
        e for body in proxy.requests("sqs", "ChangeMessageVisibilityBatch") for e in body["Entries"]
    ]
    assert entry["VisibilityTimeout"] == 300
    assert _decisions(worker, "rule", "defer") == 1


async def test_a_deferral_on_the_last_attempt_parks_max_attempts(aws, proxy, worker_stack):
    rule = {**MAINTENANCE, "delay_seconds": 1}
    worker, poller, dlq, parked = await _setup(
        aws, proxy, worker_stack, rules=[rule], policy={"max_attempts": 2}
    )
    ledger = {"ledger": {"DataType": "String", "StringValue": "maintenance"}}
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="{}", MessageAttributes=ledger)

    await run_until(poller, lambda: worker.settled("orders", "parked") == 1)

    assert worker.settled("orders", "deferred") == 1
    [message] = await drain(aws.sqs, parked)
    assert _meta(message)["retry-worker.reason"] == "max_attempts"
    assert _meta(message)["retry-worker.error"] == "Deferred"
    assert _invoked(proxy) == []


async def test_the_transform_is_what_the_target_gets(aws, proxy, worker_stack):
    transform = "merge(body, {orderId: body.customerId, customerId: null, replayed: `true`})"
    worker, poller, dlq, _parked = await _setup(aws, proxy, worker_stack, transform=transform)
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"customerId": "c-7", "total": 3}')

    await run_until(poller, lambda: worker.settled("orders", "deleted") == 1)

    assert _invoked(proxy) == [{"customerId": None, "total": 3, "orderId": "c-7", "replayed": True}]
    assert _decisions(worker, "transform", "deliver") == 1


async def test_an_unreadable_payload_parks_transform_failed_unchanged(aws, proxy, worker_stack):
    transform = "merge(body, {replayed: `true`})"
    worker, poller, dlq, parked = await _setup(aws, proxy, worker_stack, transform=transform)
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="not json at all")

    await run_until(poller, lambda: worker.settled("orders", "parked") == 1)

    assert _invoked(proxy) == []
    assert proxy.count("lambda", "Invoke") == 0
    [message] = await drain(aws.sqs, parked)
    assert message["Body"] == "not json at all"
    meta = _meta(message)
    assert meta["retry-worker.reason"] == "transform_failed"
    assert meta["retry-worker.error"].startswith("TransformFailed.")


async def test_a_transform_that_gives_null_parks(aws, proxy, worker_stack):
    worker, poller, dlq, parked = await _setup(aws, proxy, worker_stack, transform="body.missing")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"present": 1}')

    await run_until(poller, lambda: worker.settled("orders", "parked") == 1)

    [message] = await drain(aws.sqs, parked)
    assert _meta(message)["retry-worker.error"] == "TransformFailed.NullResult"


async def test_a_python_hook_parks(aws, proxy, worker_stack):
    worker, poller, dlq, parked = await _setup(
        aws, proxy, worker_stack, hook="tests.decision_hooks:park_vip"
    )
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"customer": "vip"}')
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"customer": "anyone"}')

    await run_until(
        poller,
        lambda: (
            worker.settled("orders", "parked") == 1 and worker.settled("orders", "deleted") == 1
        ),
    )

    assert _invoked(proxy) == [{"customer": "anyone"}]
    [message] = await drain(aws.sqs, parked)
    assert _meta(message)["retry-worker.reason"] == "vip_review"
    assert _meta(message)["retry-worker.error"] == "VipCustomer"
    assert _decisions(worker, "hook", "park") == 1


async def test_an_async_hook_rewrites_the_payload_after_the_transform(aws, proxy, worker_stack):
    worker, poller, dlq, _parked = await _setup(
        aws,
        proxy,
        worker_stack,
        transform="{id: body.order}",
        hook="tests.decision_hooks:rewrite",
    )
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 12}')

    await run_until(poller, lambda: worker.settled("orders", "deleted") == 1)

    # The hook saw the transformed payload as `body`, and its text replaced it.
    assert _invoked(proxy) == [{"rewritten": 12, "attempt": 1}]
    assert _decisions(worker, "hook", "deliver") == 1


async def test_a_raising_hook_is_retried_then_parked_with_its_error(aws, proxy, worker_stack):
    worker, poller, dlq, parked = await _setup(
        aws,
        proxy,
        worker_stack,
        hook="tests.decision_hooks:explode",
        policy={"max_attempts": 3, "backoff": {"initial_seconds": 0}},
    )
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"id": 9}')

    await run_until(poller, lambda: worker.settled("orders", "parked") == 1)

    assert worker.settled("orders", "deferred") == 2
    assert proxy.count("lambda", "Invoke") == 0
    [message] = await drain(aws.sqs, parked)
    meta = _meta(message)
    assert meta["retry-worker.reason"] == "max_attempts"
    assert meta["retry-worker.error"] == "HookError.ValueError"
    assert meta["retry-worker.attempts"] == "3"
    assert message["Body"] == '{"id": 9}'
    assert _decisions(worker, "hook", "error") == 3


async def test_a_hook_payload_json_cannot_hold_fails_that_message_alone(aws, proxy, worker_stack):
    """Issue 27, defect 4: the TypeError of serialising the payload escaped the hook wrapper
    and failed the batch; receive after receive its batch-mates were parked `max_attempts`
    without a delivery."""
    worker, poller, dlq, parked = await _setup(
        aws,
        proxy,
        worker_stack,
        hook="tests.decision_hooks:odd_payload",
        policy={"max_attempts": 1},
    )
    entries = [{"Id": str(i), "MessageBody": json.dumps({"n": i})} for i in range(4)]
    entries.append({"Id": "odd", "MessageBody": '{"odd": true}'})
    await aws.sqs.send_message_batch(QueueUrl=dlq, Entries=entries)

    await run_until(
        poller,
        lambda: (
            worker.settled("orders", "parked") == 1 and worker.settled("orders", "deleted") == 4
        ),
    )

    assert sorted(r["n"] for r in _invoked(proxy)) == [0, 1, 2, 3]  # each once, first try
    [message] = await drain(aws.sqs, parked)
    assert message["Body"] == '{"odd": true}'
    assert _meta(message)["retry-worker.error"] == "HookError.InvalidPayload"


async def test_a_hook_answering_nonsense_is_an_invalid_decision(aws, proxy, worker_stack):
    worker, poller, dlq, parked = await _setup(
        aws,
        proxy,
        worker_stack,
        hook="tests.decision_hooks:wrong_answer",
        policy={"max_attempts": 1},
    )
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="{}")

    await run_until(poller, lambda: worker.settled("orders", "parked") == 1)

    [message] = await drain(aws.sqs, parked)
    assert _meta(message)["retry-worker.error"] == "HookError.InvalidDecision"


async def test_a_lambda_hook_decides(aws, proxy, worker_stack):
    await create_function(aws.lambda_, "decider")
    worker, poller, dlq, parked = await _setup(aws, proxy, worker_stack, hook={"lambda": "decider"})
    answer = {"action": "park", "reason": "lambda_said_so", "error": "Ledger"}
    proxy.add(
        Rule("lambda", "Invoke", "answer", path="decider", body='"n": "second"', extra=answer)
    )
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"n": "first"}')
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"n": "second"}')

    # moto echoes its input without Docker: an echo is not a decision (InvalidDecision), so
    # the first message is answered `deliver` by a second rule.
    proxy.add(Rule("lambda", "Invoke", "answer", path="decider", extra={"action": "deliver"}))
    await run_until(
        poller,
        lambda: (
            worker.settled("orders", "parked") == 1 and worker.settled("orders", "deleted") == 1
        ),
    )

    views = [r for r in _invoked(proxy) if "message_id" in r]
    assert sorted(v["body"]["n"] for v in views) == ["first", "second"]
    assert {v["queue"] for v in views} == {"orders"}
    assert [r for r in _invoked(proxy) if "message_id" not in r] == [{"n": "first"}]
    [message] = await drain(aws.sqs, parked)
    assert _meta(message)["retry-worker.reason"] == "lambda_said_so"
    assert _meta(message)["retry-worker.error"] == "Ledger"


async def test_a_stuck_hook_holds_its_own_queue_only(aws, proxy, worker_stack):
    """50 messages behind a sync hook that blocks, concurrency 10: another queue drains
    meanwhile, and the stuck queue never has more than 10 hooks running."""
    decision_hooks.reset()
    await create_function(aws.lambda_, "orders")
    slow = await create_queue(aws.sqs, "slow-dlq")
    fast = await create_queue(aws.sqs, "fast-dlq")
    target_queue = await create_queue(aws.sqs, "fast-target")
    await create_queue(aws.sqs, "parked")
    queues = {
        "slow": {
            "name": "slow-dlq",
            "target": {"kind": "lambda", "function": "orders"},
            "hook": "tests.decision_hooks:held",
            "hook_timeout_seconds": 60,
            "rate_limit": {"per_second": 1000, "burst": 100},
        },
        "fast": {"name": "fast-dlq", "target": {"kind": "sqs", "queue": "fast-target"}},
    }
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    pollers = [await worker.poller("slow"), await worker.poller("fast")]
    for i in range(50):
        await aws.sqs.send_message(QueueUrl=slow, MessageBody=f'{{"n": {i}}}')
    for i in range(10):
        await aws.sqs.send_message(QueueUrl=fast, MessageBody=f"fast {i}")
    try:
        async with anyio.create_task_group() as tg:
            for poller in pollers:
                await tg.start(poller.run)
            await wait_for(lambda: worker.settled("fast", "deleted") == 10, timeout=30)
            await wait_for(lambda: decision_hooks.running == 10, timeout=10)
            assert proxy.count("lambda", "Invoke") == 0  # the slow queue is still held
            decision_hooks.release.set()
            await wait_for(lambda: worker.settled("slow", "deleted") == 50, timeout=60)
            for poller in pollers:
                poller.stop_receiving()
    finally:
        decision_hooks.release.set()
    assert decision_hooks.most_running == 10
    assert decision_hooks.calls == 50
    assert len(await drain(aws.sqs, target_queue)) == 10
