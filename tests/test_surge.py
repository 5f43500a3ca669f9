"""A backlog gets more receives in flight (up to concurrency / batch size) while receives come
back full and the target keeps up; the queue falls back to one long poll when it runs dry."""

from __future__ import annotations

import anyio
import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import depth, drain, wait_for
from worker.emulator import create_queue
from worker.emulator.proxy import Rule

pytestmark = pytest.mark.anyio

RECEIVE = ("sqs", "ReceiveMessage")


async def _backlog(aws, proxy, worker_stack, count: int, **queue):
    dlq = await create_queue(aws.sqs, "dlq")
    out = await create_queue(aws.sqs, "out")
    await create_queue(aws.sqs, "parked")
    for start in range(0, count, 10):
        entries = [{"Id": str(i), "MessageBody": f"m-{start + i}"} for i in range(10)]
        await aws.sqs.send_message_batch(QueueUrl=dlq, Entries=entries)
    queues = {"main": {"name": "dlq", "target": {"kind": "sqs", "queue": "out"}, **queue}}
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    # An earlier test's long poll may still be held at the proxy: count from after it.
    await wait_for(lambda: proxy.in_flight[RECEIVE] == 0, timeout=10)
    proxy.clear()
    # Each receive takes a region's round trip, so receives in flight overlap visibly.
    proxy.add(Rule("sqs", "ReceiveMessage", action="delay", seconds=0.15))
    return worker, await worker.poller("main"), dlq, out


async def _drain_with(poller, worker, proxy, count: int) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(poller.run)
        await wait_for(lambda: worker.settled("main", "deleted") >= count, timeout=60)
        # Dry: the extra receivers end, the loop's own long poll carries on alone.
        await wait_for(lambda: proxy.in_flight[RECEIVE] <= 1, timeout=10)
        poller.stop_receiving()


async def test_a_backlog_gets_receives_in_flight_up_to_its_room(aws, proxy, worker_stack):
    count = 300
    worker, poller, dlq, out = await _backlog(
        aws,
        proxy,
        worker_stack,
        count,
        concurrency=40,
        rate_limit={"per_second": 10000, "burst": 10000},
    )
    await _drain_with(poller, worker, proxy, count)
    # 40 messages of room in batches of 10: at most four receives at once, and more than one.
    assert 2 <= proxy.peak[RECEIVE] <= 4
    bodies = sorted(m["Body"] for m in await drain(aws.sqs, out))
    assert bodies == sorted(f"m-{i}" for i in range(count))  # each exactly once
    assert await depth(aws.sqs, dlq) == 0


@pytest.mark.parametrize(
    ("concurrency", "rate_limit"),
    [
        # The bucket holds 15 tokens: one received batch of 10 and one more do not fit.
        pytest.param(40, {"per_second": 40, "burst": 15}, id="the-target-is-the-limit"),
        pytest.param(10, {"per_second": 10000, "burst": 10000}, id="room-for-one-batch"),
    ],
)
async def test_one_receive_in_flight_when_room_or_target_is_the_limit(
    aws, proxy, worker_stack, concurrency, rate_limit
):
    count = 50
    worker, poller, dlq, out = await _backlog(
        aws, proxy, worker_stack, count, concurrency=concurrency, rate_limit=rate_limit
    )
    await _drain_with(poller, worker, proxy, count)
    assert proxy.peak[RECEIVE] == 1
    assert len(await drain(aws.sqs, out)) == count
    assert await depth(aws.sqs, dlq) == 0


async def test_a_fifo_backlog_keeps_every_group_in_order_with_receives_in_flight(
    aws, proxy, worker_stack
):
    groups, per_group = 8, 25
    dlq = await create_queue(aws.sqs, "jobs-dlq.fifo", FifoQueue="true")
    out = await create_queue(aws.sqs, "out.fifo", FifoQueue="true")
    await create_queue(aws.sqs, "parked")
    for n in range(per_group):
        entries = [
            {
                "Id": str(g),
                "MessageBody": f"{g}:{n}",
                "MessageGroupId": f"g{g}",
                "MessageDeduplicationId": f"{g}-{n}",
            }
            for g in range(groups)
        ]
        await aws.sqs.send_message_batch(QueueUrl=dlq, Entries=entries)
    queue = {
        "name": "jobs-dlq.fifo",
        "target": {"kind": "sqs", "queue": "out.fifo"},
        "concurrency": 40,
        "rate_limit": {"per_second": 10000, "burst": 10000},
    }
    worker = Worker(make_settings(proxy.url, {"jobs": queue}), worker_stack)
    poller = await worker.poller("jobs")
    await wait_for(lambda: proxy.in_flight[RECEIVE] == 0, timeout=10)
    proxy.clear()
    proxy.add(Rule("sqs", "ReceiveMessage", action="delay", seconds=0.15))
    async with anyio.create_task_group() as tg:
        await tg.start(poller.run)
        await wait_for(lambda: worker.settled("jobs", "deleted") >= groups * per_group, timeout=90)
        poller.stop_receiving()
    assert proxy.peak[RECEIVE] >= 2
    bodies = [m["Body"] for m in await drain(aws.sqs, out, delete=True)]
    assert len(bodies) == groups * per_group
    for g in range(groups):
        order = [int(b.split(":")[1]) for b in bodies if b.startswith(f"{g}:")]
        assert order == list(range(per_group)), f"group {g} out of order: {order}"
