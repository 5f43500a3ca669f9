"""SQS target: bulk redrive, partial batch failures, attempt counting and the source loop."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import anyio
import pytest

from tests.conftest import Aws, Worker, make_settings
from tests.helpers import depth, drain, run_until, wait_for
from worker.emulator import create_queue, create_source_with_dlq
from worker.emulator.proxy import FaultProxy, Rule

pytestmark = pytest.mark.anyio


async def _fail_in_source(aws: Aws, source: str, dlq: str) -> None:
    """Act as a consumer that always fails: receive without deleting until SQS dead-letters."""
    deadline = time.monotonic() + 10
    while await depth(aws.sqs, dlq) == 0:
        assert time.monotonic() < deadline
        await aws.sqs.receive_message(QueueUrl=source, VisibilityTimeout=0)


def _attributes(i: int) -> dict:
    return {
        "kind": {"DataType": "String", "StringValue": f"order-{i}"},
        "amount": {"DataType": "Number", "StringValue": str(i * 7)},
        "blob": {"DataType": "Binary", "BinaryValue": i.to_bytes(2, "big") + b"\x00\xff"},
        "note": {"DataType": "String.custom", "StringValue": "ü✓"},
    }


@pytest.mark.slow
async def test_redrive_of_1000_messages_keeps_every_attribute(aws, proxy, worker_stack):
    proxy.keep_journal = False
    count, queues = 1000, 4
    settings_queues = {}
    for q in range(queues):
        await create_queue(aws.sqs, f"dlq-{q}")
        await create_queue(aws.sqs, f"out-{q}")
        settings_queues[f"q{q}"] = {
            "name": f"dlq-{q}",
            "target": {"kind": "sqs", "queue": f"out-{q}"},
        }
    await create_queue(aws.sqs, "parked")
    urls = [(await aws.sqs.get_queue_url(QueueName=f"dlq-{q}"))["QueueUrl"] for q in range(queues)]
    for start in range(0, count, 10):
        q = (start // 10) % queues
        entries = [
            {"Id": str(i), "MessageBody": f"body-{i}", "MessageAttributes": _attributes(i)}
            for i in range(start, start + 10)
        ]
        await aws.sqs.send_message_batch(QueueUrl=urls[q], Entries=entries)

    worker = Worker(make_settings(proxy.url, settings_queues), worker_stack)
    pollers = [await worker.poller(f"q{q}") for q in range(queues)]

    async def run(poller, name):
        await run_until(
            poller, lambda: worker.settled(name, "deleted") >= count // queues, timeout=60
        )

    async with anyio.create_task_group() as tg:
        for q, poller in enumerate(pollers):
            tg.start_soon(run, poller, f"q{q}")

    received = []
    for q in range(queues):
        received += await drain(
            aws.sqs, (await aws.sqs.get_queue_url(QueueName=f"out-{q}"))["QueueUrl"]
        )
        assert await depth(aws.sqs, urls[q]) == 0
    bodies = sorted(m["Body"] for m in received)
    assert bodies == sorted(f"body-{i}" for i in range(count))  # each once
    for message in received:
        i = int(message["Body"].removeprefix("body-"))
        attrs = message["MessageAttributes"]
        for name, expected in _attributes(i).items():
            assert attrs[name]["DataType"] == expected["DataType"]
            key = "BinaryValue" if "BinaryValue" in expected else "StringValue"
            assert attrs[name][key] == expected[key]
        assert attrs["retry-worker.attempt"]["StringValue"] == "1"
    # 0.1 receive + 0.1 send + 0.1 delete per message is the floor with batches of 10
    assert proxy.count("sqs", "SendMessageBatch") == count // 10


async def _two_queue_worker(aws: Aws, proxy: FaultProxy, stack: AsyncExitStack):
    dlq = await create_queue(aws.sqs, "dlq")
    out = await create_queue(aws.sqs, "out")
    await create_queue(aws.sqs, "parked")
    queues = {"main": {"name": "dlq", "target": {"kind": "sqs", "queue": "out"}}}
    worker = Worker(make_settings(proxy.url, queues), stack)
    return worker, await worker.poller("main"), dlq, out


async def test_failed_send_entry_keeps_message_in_dlq(aws, proxy, worker_stack):
    worker, poller, dlq, out = await _two_queue_worker(aws, proxy, worker_stack)
    await aws.sqs.send_message_batch(
        QueueUrl=dlq, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(3)]
    )
    # the target refuses one entry on every try of the first batch call (3 tries in all)
    proxy.add(Rule("sqs", "SendMessageBatch", "fail_entries", entries=1, times=3))

    await poller.run_once()

    deletes = [e for b in proxy.requests("sqs", "DeleteMessageBatch") for e in b["Entries"]]
    assert len(deletes) == 2, "only the two accepted messages are deleted"
    assert worker.settled("main", "deferred") == 1
    assert await depth(aws.sqs, dlq) == 1
    await run_until(poller, lambda: worker.settled("main", "deleted") == 3, timeout=60)
    assert sorted(m["Body"] for m in await drain(aws.sqs, out)) == ["m0", "m1", "m2"]


async def test_failed_delete_entry_leaves_message_to_reappear(aws, proxy, worker_stack):
    _, poller, dlq, out = await _two_queue_worker(aws, proxy, worker_stack)
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="only")
    proxy.add(Rule("sqs", "DeleteMessageBatch", "fail_entries", entries=1, times=3))

    await poller.run_once()

    assert proxy.count("sqs", "DeleteMessageBatch") == 3  # retried, then reported
    assert await depth(aws.sqs, dlq) == 1, "a failed delete never loses the message"
    assert [m["Body"] for m in await drain(aws.sqs, out)] == ["only"]


async def _dead_lettered_by_source(
    aws: Aws, proxy: FaultProxy, stack: AsyncExitStack, name: str, body: str, **counts: int
):
    """A source queue whose consumer always fails, its DLQ holding `body`, and a worker
    sending the DLQ back to the source (`source: true`)."""
    source, dlq = await create_source_with_dlq(
        aws.sqs, name, f"{name}-dlq", max_receive_count=counts["max_receive_count"]
    )
    parked = await create_queue(aws.sqs, "parked")
    await aws.sqs.send_message(QueueUrl=source, MessageBody=body)
    await _fail_in_source(aws, source, dlq)
    queues = {
        name: {
            "name": f"{name}-dlq",
            "target": {"kind": "sqs", "source": True},
            "policy": {"max_attempts": counts["max_attempts"]},
        }
    }
    worker = Worker(make_settings(proxy.url, queues), stack)
    return worker, await worker.poller(name), source, dlq, parked


async def test_attempts_start_at_one_for_a_dlq_fed_by_sqs_redrive(aws, proxy, worker_stack):
    worker, poller, source, _, _ = await _dead_lettered_by_source(
        aws, proxy, worker_stack, "src", "job", max_receive_count=3, max_attempts=2
    )

    await run_until(poller, lambda: worker.settled("src", "deleted") == 1, timeout=60)

    [back] = await drain(aws.sqs, source)
    assert back["Body"] == "job"
    assert back["MessageAttributes"]["retry-worker.attempt"]["StringValue"] == "1"
    assert worker.settled("src", "parked") == 0


async def test_message_the_source_keeps_dead_lettering_is_parked_after_max_attempts(
    aws, proxy, worker_stack
):
    worker, poller, source, dlq, parked = await _dead_lettered_by_source(
        aws, proxy, worker_stack, "loop", "never-works", max_receive_count=1, max_attempts=3
    )

    for cycle in range(1, 4):
        await run_until(poller, lambda n=cycle: worker.settled("loop", "deleted") == n, timeout=60)
        await _fail_in_source(aws, source, dlq)
    await run_until(poller, lambda: worker.settled("loop", "parked") == 1, timeout=60)

    assert proxy.count("sqs", "SendMessageBatch") == 4  # three cycles, then the parking
    [message] = await drain(aws.sqs, parked)
    attrs = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert message["Body"] == "never-works"
    assert attrs["retry-worker.reason"] == "max_attempts"
    assert attrs["retry-worker.attempts"] == "3"
    assert await depth(aws.sqs, dlq) == 0
    assert await depth(aws.sqs, source) == 0


async def test_source_named_by_the_message_wins_over_the_single_redrive_source(aws, worker_stack):
    """Real AWS sends DeadLetterQueueSourceArn (the emulator never does): inject it."""
    from worker.aws.sqs import redrive_sources
    from worker.core.envelope import DlqMessage
    from worker.settings import SqsTarget
    from worker.targets.base import Delivery
    from worker.targets.sqs import SqsSender

    _, dlq = await create_source_with_dlq(aws.sqs, "a", "shared-dlq", max_receive_count=2)
    other = await create_queue(aws.sqs, "b")
    other_arn = (await aws.sqs.get_queue_attributes(QueueUrl=other, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    sources = await redrive_sources(aws.sqs, dlq)
    sender = SqsSender(aws.sqs, SqsTarget(kind="sqs", source=True), sources)
    named = DlqMessage("m1", "r1", "to-b", source_arn=other_arn)
    unnamed = DlqMessage("m2", "r2", "to-a")

    assert await sender.deliver([Delivery(named, 1), Delivery(unnamed, 1)]) == [None, None]

    assert [m["Body"] for m in await drain(aws.sqs, other)] == ["to-b"]
    source_a = (await aws.sqs.get_queue_url(QueueName="a"))["QueueUrl"]
    assert [m["Body"] for m in await drain(aws.sqs, source_a)] == ["to-a"]


async def test_receive_errors_back_off_and_recover(aws, proxy, worker_stack):
    worker, poller, dlq, out = await _two_queue_worker(aws, proxy, worker_stack)
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="survivor")
    # two failing calls (the SDK tries twice each): a throttle, then a dropped connection
    proxy.add(Rule("sqs", "ReceiveMessage", "error", status=400, code="RequestThrottled", times=2))
    proxy.add(Rule("sqs", "ReceiveMessage", "reset", times=2))

    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run)
        await wait_for(lambda: poller.last_receive_ok is False, timeout=10)
        await wait_for(lambda: worker.settled("main", "deleted") == 1, timeout=20)
        poller.stop_receiving()

    errors = worker.registry.get_sample_value(
        "retry_worker_receive_requests_total", {"queue": "main", "result": "error"}
    )
    assert errors == 2
    assert poller.last_receive_ok is True
    assert [m["Body"] for m in await drain(aws.sqs, out)] == ["survivor"]


async def test_a_crashing_pipeline_keeps_the_batch_and_backs_off(aws, proxy, worker_stack):
    _, poller, dlq, _ = await _two_queue_worker(aws, proxy, worker_stack)
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="kept")

    class Broken:
        name = "broken"
        hands_off = False

        def loops_back(self, message):
            return False

        async def deliver(self, batch):
            raise RuntimeError("a bug")

    poller._pipeline.target = Broken()
    await poller.run_once()

    [change] = proxy.requests("sqs", "ChangeMessageVisibilityBatch")
    assert [e["VisibilityTimeout"] for e in change["Entries"]] == [60]
    assert proxy.count("sqs", "DeleteMessageBatch") == 0
    assert await depth(aws.sqs, dlq) == 1


async def test_failed_visibility_change_leaves_message_to_reappear(aws, proxy, worker_stack):
    worker, poller, dlq, _ = await _two_queue_worker(aws, proxy, worker_stack)
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="deferred")
    proxy.add(Rule("sqs", "SendMessageBatch", "fail_entries", entries=1, times=3))
    proxy.add(Rule("sqs", "ChangeMessageVisibilityBatch", "fail_entries", entries=1, times=3))

    await poller.run_once()

    assert proxy.count("sqs", "ChangeMessageVisibilityBatch") == 3  # retried, then reported
    assert proxy.count("sqs", "DeleteMessageBatch") == 0
    assert await depth(aws.sqs, dlq) == 1, "it reappears after its receive's visibility timeout"
    errors = worker.registry.get_sample_value(
        "retry_worker_aws_errors_total",
        {"service": "sqs", "operation": "ChangeMessageVisibilityBatch", "error": "InternalFailure"},
    )
    assert errors == 1


def test_sqs_target_needs_the_loop_guard_only_when_the_marker_cannot_travel():
    from worker.core.envelope import DlqMessage
    from worker.settings import SqsTarget
    from worker.targets.sqs import SqsSender

    sender = SqsSender(None, SqsTarget(kind="sqs", queue="q"), {})
    full = {f"a{i}": {"DataType": "String", "StringValue": "v"} for i in range(10)}
    assert not sender.loops_back(DlqMessage("m", "r", "b", attributes=dict(list(full.items())[:9])))
    assert sender.loops_back(DlqMessage("m", "r", "b", attributes=full))


async def test_an_unreadable_redrive_source_does_not_stop_the_dlq(aws, proxy, worker_stack):
    source, dlq = await create_source_with_dlq(aws.sqs, "locked", "locked-dlq", max_receive_count=2)
    await create_queue(aws.sqs, "parked")
    out = await create_queue(aws.sqs, "unlocked-out")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="still served")
    # the worker's role cannot read the source (added after its IAM policy was made)
    only_source = f'"{source}"'  # the exact URL, not the DLQ's (which starts the same)
    proxy.add(
        Rule(
            "sqs", "GetQueueAttributes", "error", status=403, code="AccessDenied", body=only_source
        )
    )
    queues = {"locked": {"name": "locked-dlq", "target": {"kind": "sqs", "queue": "unlocked-out"}}}
    worker = Worker(make_settings(proxy.url, queues), worker_stack)

    poller = await worker.poller("locked")
    await run_until(poller, lambda: worker.settled("locked", "deleted") == 1, timeout=60)

    assert [m["Body"] for m in await drain(aws.sqs, out)] == ["still served"]


async def test_batches_during_the_first_read_of_the_sources_wait_for_it(aws, proxy, worker_stack):
    """Issue 27, defect 3: the first batch marked the sources read before reading them; the
    batches received meanwhile saw none, counted the receive count as attempts and parked a
    backlog `max_attempts` without a single delivery."""
    count = 30
    source, dlq = await create_source_with_dlq(aws.sqs, "src", "src-dlq", max_receive_count=3)
    await create_queue(aws.sqs, "parked")
    for start in range(0, count, 10):
        entries = [{"Id": str(i), "MessageBody": f"m-{start + i}"} for i in range(10)]
        await aws.sqs.send_message_batch(QueueUrl=source, Entries=entries)
    deadline = time.monotonic() + 30
    while await depth(aws.sqs, dlq) < count:  # a consumer that always fails
        assert time.monotonic() < deadline
        await aws.sqs.receive_message(QueueUrl=source, MaxNumberOfMessages=10, VisibilityTimeout=0)
    queues = {
        "src": {
            "name": "src-dlq",
            "target": {"kind": "sqs", "source": True},
            "policy": {"max_attempts": 2},
            "concurrency": 30,
            "rate_limit": {"per_second": 10000, "burst": 10000},
        }
    }
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    poller = await worker.poller("src")
    # Receives overlap (a region's round trip), and the first read of the sources is slow.
    proxy.add(Rule("sqs", "ReceiveMessage", action="delay", seconds=0.15))
    proxy.add(Rule("sqs", "ListDeadLetterSourceQueues", action="delay", seconds=1.0))

    async with anyio.create_task_group() as tg:
        await tg.start(poller.run)
        settled = ("deleted", "parked")
        await wait_for(lambda: sum(worker.settled("src", a) for a in settled) >= count)
        poller.stop_receiving()

    assert proxy.peak[("sqs", "ReceiveMessage")] >= 2  # batches did run side by side
    assert worker.settled("src", "parked") == 0
    back = await drain(aws.sqs, source)
    assert sorted(m["Body"] for m in back) == sorted(f"m-{i}" for i in range(count))
    assert {m["MessageAttributes"]["retry-worker.attempt"]["StringValue"] for m in back} == {"1"}
