"""A backlog gets more receives in flight (up to concurrency / batch size) while receives come
back full and the target keeps up; the queue falls back to one long poll when it runs dry."""

from __future__ import annotations

import time

import anyio
import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import depth, drain, wait_for
from worker.aws.attributes import PAUSED_TAG
from worker.dlq.pause import PauseWatch
from worker.emulator import create_queue
from worker.emulator.proxy import Rule

pytestmark = pytest.mark.anyio

RECEIVE = ("sqs", "ReceiveMessage")
# Room for four batches and a target that keeps up: up to four receives in flight.
ROOM_FOR_FOUR = {"concurrency": 40, "rate_limit": {"per_second": 10000, "burst": 10000}}


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
    worker, poller, dlq, out = await _backlog(aws, proxy, worker_stack, count, **ROOM_FOR_FOUR)
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


@pytest.mark.slow  # seconds of real waiting: make test, not make unit
async def test_a_pause_stops_every_receiver_as_soon_as_it_is_seen(aws, proxy, worker_stack):
    """Issue 27, defect 2: `_held` was set only after the paused wait (the tag's interval), and
    the surge receivers went on receiving full batches meanwhile. A pause seen stops them all,
    calls already in flight aside."""
    count = 600
    worker, poller, dlq, _ = await _backlog(aws, proxy, worker_stack, count, **ROOM_FOR_FOUR)
    # The tag is read every 2 s instead of 30: the paused wait is long enough to see receives.
    poller._watch.pause = PauseWatch(await worker.clients.get("sqs"), dlq, interval=2.0)
    tags = ("sqs", "ListQueueTags")
    async with anyio.create_task_group() as tg:
        await tg.start(poller.run)
        await wait_for(lambda: proxy.in_flight[RECEIVE] >= 3, timeout=30)  # surging
        await aws.sqs.tag_queue(QueueUrl=dlq, Tags={PAUSED_TAG: "true"})
        paused = ("retry_worker_queue_paused", {"queue": "main"})
        await wait_for(lambda: worker.registry.get_sample_value(*paused) == 1, timeout=10)
        seen = time.monotonic()
        read = proxy.calls[tags]
        # Two more reads of the tag: the loop waited out a whole interval while paused.
        await wait_for(lambda: proxy.calls[tags] >= read + 2, timeout=10)
        after = [t for t in proxy.times(*RECEIVE) if t > seen]
        poller.stop_receiving()
    # Receives already on their way when the pause was seen may arrive after it: at most one
    # per surge receiver. Before the fix: a receive every 0.15 s per receiver for 2 s.
    assert len(after) <= 3, f"{len(after)} receives after the pause was seen"
    assert worker.settled("main", "deleted") < count  # the backlog was still there


async def test_the_room_a_receive_takes_goes_back_exactly_once():
    """`Taken` (dlq/room.py) is the one place a receive's tokens go back: what the receive did
    not need, the delivery room once settling room is free, and the settling room at the end."""
    from worker.dlq.room import Room

    def beat() -> None:
        pass

    room = Room(10, 10, None)
    first = await room.take(beat)
    assert (first.count, room.busy()) == (10, 10)
    first.keep(4)  # the receive gave four messages
    assert room.busy() == 4
    await first.hand_over()  # delivered: the next receive need not wait for their settling
    assert room.busy() == 0
    second = await room.take(beat)
    assert second.count == 10
    async with anyio.create_task_group() as tg:
        tg.start_soon(second.hand_over)  # ten to settle, four still settling: it waits
        await anyio.wait_all_tasks_blocked()
        assert not second.handed_over
        assert room.busy() == 10
        first.end()
        first.end()  # a second end gives nothing back twice
    assert second.handed_over
    assert room._settling.value == 0  # all ten settling are second's: none came back twice
    assert room.busy() == 0
    third = await room.take(beat)
    with anyio.CancelScope() as scope:  # settling room is all second's: cancelled waiting
        scope.cancel()
        await third.hand_over()
    assert not third.handed_over
    third.end()  # never handed over: its delivery room goes back
    second.end()
    assert room.busy() == 0
    whole = await room.take_whole(beat)
    await whole.hand_over()  # all the settling room is free again
    assert whole.handed_over


async def test_a_receive_stopped_during_its_long_poll_gives_its_room_back(aws, proxy, worker_stack):
    await create_queue(aws.sqs, "dlq")
    await create_queue(aws.sqs, "parked")
    queues = {"main": {"name": "dlq", "target": {"kind": "lambda", "function": "fn"}}}
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    poller = await worker.poller("main")
    proxy.add(Rule("sqs", "ReceiveMessage", action="delay", seconds=3.0))
    async with anyio.create_task_group() as tg:
        await tg.start(poller.run)

        def holding() -> bool:  # its receive is at the proxy, holding its room
            return poller._room.busy() > 0 and proxy.in_flight[("sqs", "ReceiveMessage")] >= 1

        await wait_for(holding, timeout=20)
        poller.stop_receiving()
    assert poller._room.busy() == 0
