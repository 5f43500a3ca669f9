"""The loop guard: a payload that keeps coming back through a hand-off target is parked."""

from __future__ import annotations

import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import depth, drain
from worker.core.loopguard import LoopGuard, fingerprint
from worker.emulator import create_function, create_queue


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_counts_distinct_dlq_messages_per_fingerprint():
    guard = LoopGuard(Clock())
    key = fingerprint("lambda:fn", '{"a": 1}')
    assert [guard.observe(key, m) for m in ("m1", "m1", "m2", "m3")] == [1, 1, 2, 3]
    assert guard.observe(fingerprint("lambda:other", '{"a": 1}'), "m4") == 1  # per target


def test_counts_expire_after_the_window():
    clock = Clock()
    guard = LoopGuard(clock, window_seconds=100)
    guard.observe("k", "m1")
    guard.observe("k", "m2")
    clock.now = 101
    assert guard.observe("k", "m3") == 1


def test_a_fingerprint_seen_again_still_expires_after_its_window():
    clock = Clock()
    guard = LoopGuard(clock, window_seconds=100)
    guard.observe("old", "m1")
    clock.now = 10
    guard.observe("young", "m2")
    clock.now = 50
    assert guard.observe("old", "m3") == 2  # seen again: must not move behind "young"
    clock.now = 105  # "old" is past its window, "young" is not
    assert guard.observe("old", "m4") == 1
    assert guard.observe("young", "m5") == 2


def test_is_bounded():
    guard = LoopGuard(Clock(), max_fingerprints=3)
    for i in range(10):
        guard.observe(f"k{i}", "m")
    assert len(guard) == 3


@pytest.mark.anyio
async def test_payload_returning_through_an_event_invoke_is_parked(aws, proxy, worker_stack):
    await create_function(aws.lambda_, "async-fn")
    dlq = await create_queue(aws.sqs, "async-dlq")
    parked = await create_queue(aws.sqs, "parked")
    queue = {
        "name": "async-dlq",
        "target": {"kind": "lambda", "function": "async-fn", "invocation_type": "Event"},
        "policy": {"max_attempts": 3},
    }
    worker = Worker(make_settings(proxy.url, queues={"async": queue}), worker_stack)
    poller = await worker.poller("async")
    payload = '{"always": "fails later"}'

    for cycle in range(1, 3):
        # the function's async failure path sends the event back as a new DLQ message
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody=payload)
        while worker.settled("async", "deleted") < cycle:
            await poller.run_once()
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=payload)
    while worker.settled("async", "parked") < 1:
        await poller.run_once()

    assert proxy.count("lambda", "Invoke") == 2
    [message] = await drain(aws.sqs, parked)
    assert message["MessageAttributes"]["retry-worker.reason"]["StringValue"] == "loop_detected"
    assert await depth(aws.sqs, dlq) == 0


def test_the_marker_check_uses_the_destinations_own_size_limit():
    """Issue 18: with the service's 1 MiB limit, a message within a few bytes of a smaller
    destination's limit was taken to carry the marker (it cannot), and the loop guard did not
    watch it."""
    from worker.aws.sqs import SqsQueue
    from worker.core.envelope import DlqMessage
    from worker.settings import SqsTarget
    from worker.targets.sqs import SqsSender

    sender = SqsSender(None, SqsTarget(kind="sqs", queue="small"), {})  # type: ignore[arg-type]
    message = DlqMessage("m", "r", "x" * 1020)
    assert not sender.loops_back(message)  # the limit unknown yet: the service's
    small = SqsQueue(None, "http://127.0.0.1:1/123456789012/small")  # type: ignore[arg-type]
    small._max_message_bytes = 1024
    sender._queues["small"] = small
    assert sender.loops_back(message)  # no room for the marker: the guard watches it
