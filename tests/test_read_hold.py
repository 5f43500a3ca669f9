"""A long read holds its messages to its projected end, and never cycles on messages that come
back after their hold ran out (a queue stand-in: the hold's expiry is simulated, not waited)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from worker.ops.records import Record
from worker.ops.scan import HOLD_SECONDS, QueueReader
from worker.settings import VISIBILITY_LIMIT_SECONDS

pytestmark = pytest.mark.anyio


class ReturningQueue:
    """Messages 0..count-1; once all were handed out, they come back (every hold ran out),
    for ever — as a real queue would for a read slower than its hold."""

    is_fifo = False

    def __init__(self, count: int) -> None:
        self.count = count
        self.next = 0
        self.receives = 0
        self.holds: list[int] = []
        self.released = 0

    async def receive(self, limit: int, wait: int, hold: int) -> list[dict[str, Any]]:
        self.receives += 1
        assert self.receives < 1000, "the read cycles on messages that keep coming back"
        self.holds.append(hold)
        out = []
        for _ in range(limit):
            n = self.next % self.count
            self.next += 1
            out.append({"MessageId": f"m{n}", "ReceiptHandle": f"r{n}-{self.next}", "Body": "{}"})
        return out

    async def change_visibility(self, receipts: dict[str, tuple[str, int]]) -> list[str]:
        self.released += len(receipts)
        return []


async def read(reader: QueueReader) -> list[Record]:
    """Every record of a whole read (leaving the reader releases what it kept)."""
    async with reader:
        return [r for batch in [b async for b in reader.batches()] for r in batch]


async def test_messages_that_come_back_end_the_read_once_every_message_was_read():
    queue = ReturningQueue(50)
    reader = QueueReader(queue, expected=50, parallel=1)  # type: ignore[arg-type]
    ids = [r.message_id for r in await read(reader)]
    assert sorted(ids) == sorted(f"m{n}" for n in range(50))  # each once
    # five receives of new messages, then one that brought back only read ones: every
    # message it expected was read, so nothing more is asked
    assert queue.receives == 5 + 1
    assert reader.unreleased == 0
    assert queue.released == 10  # the returning receive's messages, kept to release


async def test_a_read_with_no_expected_count_also_ends_on_returning_messages():
    queue = ReturningQueue(30)
    reader = QueueReader(queue, parallel=1)  # type: ignore[arg-type]
    assert len(await read(reader)) == 30
    assert queue.receives == 3 + 2


async def test_returning_messages_do_not_end_a_read_that_has_not_read_everything():
    """Early returns (only read ones came back) while messages are still unread: go on."""

    class EarlyReturns(ReturningQueue):
        async def receive(self, limit: int, wait: int, hold: int) -> list[dict[str, Any]]:
            if self.receives in (2, 3, 4):  # three receives of messages read already
                self.receives += 1
                return [{"MessageId": "m0", "ReceiptHandle": "again", "Body": "{}"}]
            return await super().receive(limit, wait, hold)

    queue = EarlyReturns(40)
    reader = QueueReader(queue, expected=40, parallel=1)  # type: ignore[arg-type]
    assert {r.message_id for r in await read(reader)} == {f"m{n}" for n in range(40)}


async def test_an_over_counted_read_ends_when_only_read_messages_keep_coming_back():
    """The count a read began with was too high (messages deleted just before) and its holds
    are short (the console's 60 s): it read everything, then only read messages came back,
    for ever. Five such receives in a row end it, and it says how far it got."""
    queue = ReturningQueue(40)
    reader = QueueReader(queue, hold=60, max_hold=60, expected=45, parallel=1)  # type: ignore[arg-type]
    assert len(await read(reader)) == 40
    assert queue.receives == 4 + 6  # four of new messages, six that brought only read ones
    assert reader.incomplete is not None
    assert reader.incomplete.startswith("read 40 of about 45 messages")


async def test_a_read_that_gave_up_says_so_even_if_its_last_receive_was_empty():
    class ThenEmpty(ReturningQueue):
        async def receive(self, limit: int, wait: int, hold: int) -> list[dict[str, Any]]:
            if self.receives == 4 + 5:  # after five receives of read messages: nothing
                self.receives += 1
                return []
            return await super().receive(limit, wait, hold)

    queue = ThenEmpty(40)
    reader = QueueReader(queue, hold=60, max_hold=60, expected=45, parallel=1)  # type: ignore[arg-type]
    assert len(await read(reader)) == 40
    assert reader.incomplete is not None


async def test_a_read_with_a_ceiling_never_holds_past_it():
    clock = [0.0]
    queue = ReturningQueue(10_000)
    reader = QueueReader(queue, hold=60, max_hold=60, expected=10_000, monotonic=lambda: clock[0])  # type: ignore[arg-type]
    reader.read, clock[0] = 200, 20.0  # 200 messages in 20 s: over 980 s to go
    assert reader.hold() == 60  # not 2 x 980 + 600: a console killed now hides nothing longer


async def test_the_hold_reaches_past_the_projected_end_of_a_slow_read():
    clock = [0.0]
    queue = ReturningQueue(10_000)
    reader = QueueReader(queue, expected=10_000, monotonic=lambda: clock[0], parallel=1)  # type: ignore[arg-type]
    async with reader:
        await anext(reader.batches())
    assert queue.holds[0] == HOLD_SECONDS  # the pace is not known yet
    reader.read, clock[0] = 200, 20.0  # one second per batch of 10 (a replay at --rate 10)
    # 9,800 left and 20 read ahead (a batch in its receiver, one in its taker) at 0.1 s
    # each: 982 s to go, held twice over plus the margin
    assert reader.hold() == 2 * 982 + 600
    clock[0] *= 50  # much slower: 5 s a message
    assert reader.hold() == VISIBILITY_LIMIT_SECONDS  # never more than SQS allows


async def test_the_in_flight_quota_stops_a_read_with_its_reason_not_a_short_count():
    from botocore.exceptions import ClientError

    class Quota(ReturningQueue):
        async def receive(self, limit: int, wait: int, hold: int) -> list[dict[str, Any]]:
            if self.receives == 3:  # SQS: too many messages received and not yet deleted
                error = {"Error": {"Code": "OverLimit", "Message": "too many in flight"}}
                raise ClientError(error, "ReceiveMessage")
            return await super().receive(limit, wait, hold)

    queue = Quota(200_000)
    reader = QueueReader(queue, expected=200_000, parallel=1)  # type: ignore[arg-type]
    assert len(await read(reader)) == 30 == reader.read
    assert reader.incomplete is not None
    assert "read 30 messages" in reader.incomplete
    assert "120,000" in reader.incomplete


async def test_a_slow_rate_holds_the_read_ahead_until_its_turn():
    """At --rate 0.05 the 200 messages ten receivers and ten takers may hold (read, not yet
    acted on) wait up to 4,000 s for their turn: the first receives hold them twice that."""
    queue = ReturningQueue(10_000)
    reader = QueueReader(queue, expected=10_000)  # type: ignore[arg-type]
    assert reader.hold() == HOLD_SECONDS
    reader.paced(0.05)
    assert reader.hold() == 2 * 200 / 0.05 + 600


class PartialQueue(ReturningQueue):
    """`count` messages, each once; every third receive returns 7 (SQS's short polls sample
    servers: fewer than there are)."""

    async def receive(self, limit: int, wait: int, hold: int) -> list[dict[str, Any]]:
        self.receives += 1
        await anyio.sleep(0.002)
        take = 7 if self.receives % 3 == 0 else limit
        start, self.next = self.next, min(self.count, self.next + take)
        return [
            {"MessageId": f"m{n}", "ReceiptHandle": f"r{n}", "Body": "{}"}
            for n in range(start, self.next)
        ]


async def test_receivers_retiring_at_once_never_end_a_read_early():
    """Two receivers whose receives came back short at the same moment both retired (each
    saw the other still counted): the stream ended with most of the queue unread, and the
    read said nothing. One always stays to read the end."""
    queue = PartialQueue(2000)
    reader = QueueReader(queue, expected=2000)  # type: ignore[arg-type]
    read = 0
    async with reader:

        async def taker() -> None:
            nonlocal read
            async for batch in reader.batches():
                read += len(batch)
                for record in batch:
                    reader.keep(record)
                await anyio.sleep(0.02)  # acting on a chunk

        async with anyio.create_task_group() as tasks:
            for _ in range(10):
                tasks.start_soon(taker)
    assert read == 2000
    assert reader.incomplete is None


async def test_a_receive_failing_after_the_read_was_over_is_no_failure():
    """`--limit` reached while another receive was in flight, which then failed: the command
    had all it asked for; it said nothing and exited 1."""
    from botocore.exceptions import ClientError

    class FailsLate(ReturningQueue):
        async def receive(self, limit: int, wait: int, hold: int) -> list[dict[str, Any]]:
            if self.receives >= 1:
                self.receives += 1
                await anyio.sleep(0.05)
                error = {"Error": {"Code": "KmsThrottled", "Message": "slow down"}}
                raise ClientError(error, "ReceiveMessage")
            return await super().receive(limit, wait, hold)

    queue = FailsLate(100)
    async with QueueReader(queue, expected=100) as reader:  # type: ignore[arg-type]
        async for batch in reader.batches():
            for record in batch:
                reader.keep(record)
            reader.finish()  # enough (--limit)
    assert reader.read == 10
    assert queue.receives >= 2, "a second receive was in flight"


async def test_a_read_ended_by_its_limit_on_a_fifo_queue_is_not_incomplete():
    """`--limit 5` on a FIFO parking queue: the read stops early by design; it said
    "incomplete" and exited 1."""

    class Fifo(ReturningQueue):
        is_fifo = True

    async with QueueReader(Fifo(50), expected=50) as reader:  # type: ignore[arg-type]
        async for batch in reader.batches():
            for record in batch:
                reader.keep(record)
            reader.finish(enough=True)
    assert reader.incomplete is None
