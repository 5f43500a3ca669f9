"""What was decided is settled as decided — as it comes, at a shutdown past its grace — and
only the undecided are handed back; nothing starts receiving once shutdown has begun (issue
18, defects 2 and 3)."""

from __future__ import annotations

import functools

import anyio
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import make_settings
from tests.helpers import depth, drain, wait_for
from tests.test_decisions import _setup
from worker.daemon.app import serve
from worker.emulator import create_function, create_queue
from worker.emulator.proxy import Rule

pytestmark = pytest.mark.anyio


async def test_an_abort_deletes_what_was_delivered_and_releases_only_the_hung(
    aws, proxy, worker_stack, monkeypatch
):
    from worker.core.outcomes import Delivered
    from worker.dlq.pipeline import Settlements

    worker, poller, dlq, _ = await _setup(aws, proxy, worker_stack)
    proxy.add(Rule("lambda", "Invoke", "delay", seconds=60, body='"hang"'))
    entries = [{"Id": str(i), "MessageBody": f'{{"n": "{n}"}}'} for i, n in enumerate("ab")]
    entries.append({"Id": "2", "MessageBody": '{"n": "hang"}'})
    await aws.sqs.send_message_batch(QueueUrl=dlq, Entries=entries)

    # The two answers are decided (neither the proxy forwarding them nor the client having
    # them is enough: the adapter still reads the payload, and under load an abort came first).
    delivered: list[int] = []
    settle = Settlements.settle

    def told(self, index, settlement):  # type: ignore[no-untyped-def]
        if isinstance(settlement.outcome, Delivered):
            delivered.append(index)
        settle(self, index, settlement)

    monkeypatch.setattr(Settlements, "settle", told)

    async with anyio.create_task_group() as tg:
        await tg.start(poller.run)
        await wait_for(lambda: len(delivered) == 2)
        poller.stop_receiving()
        poller.abort()  # the shutdown's grace ran out: the hung call is cancelled

    assert worker.settled("orders", "deleted") == 2
    assert worker.settled("orders", "released") == 1
    [left] = await drain(aws.sqs, dlq)  # visible again at once, and only that one
    assert left["Body"] == '{"n": "hang"}'
    assert sorted(b["n"] for b in proxy.accepted_requests("lambda", "Invoke")) == ["a", "b"]


async def test_delivered_messages_are_deleted_while_a_call_still_hangs(aws, proxy, worker_stack):
    worker, poller, dlq, _ = await _setup(aws, proxy, worker_stack)
    release = proxy.add(Rule("lambda", "Invoke", "delay", seconds=60, body='"hang"'))
    for n in ("a", "hang"):
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody=f'{{"n": "{n}"}}')

    async with anyio.create_task_group() as tg:
        await tg.start(poller.run)
        await wait_for(lambda: worker.settled("orders", "deleted") == 1, timeout=20)
        assert release.applied == 1  # the other call is still out
        poller.stop_receiving()
        poller.abort()
    assert await depth(aws.sqs, dlq) == 1


@pytest.mark.slow  # seconds of real waiting: make test, not make unit
async def test_a_queue_that_resolves_during_shutdown_never_receives(aws, proxy):
    """A queue still resolving when shutdown began used to start receiving afterwards (it
    was not in the shutdown's snapshot) and then be cancelled from outside, its messages
    invisible for their lease."""
    await create_function(aws.lambda_, "slow")
    busy = await create_queue(aws.sqs, "busy-dlq")
    late = await create_queue(aws.sqs, "late-dlq")
    await create_queue(aws.sqs, "parked")
    await aws.sqs.send_message(QueueUrl=busy, MessageBody='{"slow": 1}')
    for i in range(3):
        await aws.sqs.send_message(QueueUrl=late, MessageBody=f"late {i}")
    queues = {
        "busy": {"name": "busy-dlq", "target": {"kind": "lambda", "function": "slow"}},
        "late": {"name": "late-dlq", "target": {"kind": "sqs", "queue": "parked"}},
    }
    settings = make_settings(
        proxy.url, queues, http={"host": "127.0.0.1", "port": 0}, shutdown={"grace_seconds": 15}
    )
    # The busy queue's call takes 9 s (shutdown waits for it); the late queue's URL takes 6 s
    # to come back: it resolves while shutdown is waiting.
    proxy.add(Rule("lambda", "Invoke", "delay", seconds=9))
    resolving = proxy.add(Rule("sqs", "GetQueueUrl", "delay", seconds=6, body="late-dlq"))

    def late_receives() -> list[dict]:
        receives = proxy.requests("sqs", "ReceiveMessage")
        return [b for b in receives if b["QueueUrl"].endswith("late-dlq")]

    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(functools.partial(serve, settings, stop, registry=CollectorRegistry()))
        # the busy call is out, and the late queue's resolve is under way
        await wait_for(
            lambda: proxy.count("lambda", "Invoke") == 1 and resolving.applied == 1, timeout=20
        )
        assert late_receives() == []  # still resolving when shutdown begins
        stop.set()
    assert late_receives() == []
    assert len(await drain(aws.sqs, late)) == 3  # all visible: nothing held by a lease
