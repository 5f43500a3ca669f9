"""FIFO DLQs with a one-message-per-call target: a group is delivered one at a time, in order;
a failure holds the rest of its group, which is handed back untried and not charged attempts."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import depth, drain
from worker.core.waiting import WaitLedger
from worker.emulator import create_function, create_queue
from worker.emulator.proxy import Rule

pytestmark = pytest.mark.anyio
PER_GROUP = 6


def _body(group: str, n: int) -> str:
    return json.dumps({"g": group, "n": n})


async def test_fifo_groups_are_delivered_in_order_through_failures(aws, proxy, worker_stack):
    await create_function(aws.lambda_, "fn")
    dlq = await create_queue(aws.sqs, "jobs-dlq.fifo", FifoQueue="true")
    parked = await create_queue(aws.sqs, "parked")
    for n in range(PER_GROUP):
        for group in ("A", "B"):
            await aws.sqs.send_message(
                QueueUrl=dlq,
                MessageBody=_body(group, n),
                MessageGroupId=group,
                MessageDeduplicationId=f"{group}{n}",
            )
    # A2 fails twice, then succeeds; B1 fails every time and is parked after max_attempts
    proxy.add(Rule("lambda", "Invoke", "function_error", body=_body("A", 2), times=2))
    proxy.add(Rule("lambda", "Invoke", "function_error", body=_body("B", 1)))
    queue = {
        "name": "jobs-dlq.fifo",
        "target": {"kind": "lambda", "function": "fn"},
        "policy": {"max_attempts": 3},
        "circuit_breaker": {"minimum_calls": 20},  # this test is about order, not the breaker
    }
    worker = Worker(make_settings(proxy.url, {"jobs": queue}), worker_stack)
    poller = await worker.poller("jobs")
    assert poller._pipeline.in_group_order

    for _ in range(200):
        if worker.settled("jobs", "deleted") + worker.settled("jobs", "parked") == 2 * PER_GROUP:
            break
        await poller.run_once()

    delivered = proxy.accepted_requests("lambda", "Invoke")
    for group in ("A", "B"):
        order = [e["n"] for e in delivered if e["g"] == group]
        expected = [n for n in range(PER_GROUP) if (group, n) != ("B", 1)]
        assert order == expected, f"group {group} delivered out of order: {order}"
    [dead] = await drain(aws.sqs, parked)
    assert json.loads(dead["Body"]) == {"g": "B", "n": 1}
    assert dead["MessageAttributes"]["retry-worker.reason"]["StringValue"] == "max_attempts"
    # B2..B5 waited behind B1 for three of its receives and were still tried, not parked
    assert worker.settled("jobs", "parked") == 1
    assert worker.settled("jobs", "released") == 4 * 3  # B2..B5, three receives each
    # the untried receives were never deliveries
    failed = worker.registry.get_sample_value(
        "retry_worker_deliveries_total", {"queue": "jobs", "target": "fn", "outcome": "retryable"}
    )
    assert failed == 2 + 3
    assert len(poller._pipeline.waiting) == 0  # settled messages are forgotten
    assert await depth(aws.sqs, dlq) == 0


def test_wait_ledger_counts_hand_backs_and_is_bounded():
    ledger = WaitLedger(max_messages=2)
    ledger.handed_back("a")
    ledger.handed_back("a")
    ledger.handed_back("b")
    assert (ledger.untried("a"), ledger.untried("b")) == (2, 1)
    ledger.forget("a")
    assert ledger.untried("a") == 0
    ledger.handed_back("c")
    ledger.handed_back("d")  # over the bound: the oldest goes
    assert ledger.untried("b") == 0
    assert len(ledger) == 2


def test_a_message_is_settled_once_and_told_at_once():
    from worker.core.envelope import DlqMessage
    from worker.core.outcomes import Release, Settlement
    from worker.dlq.pipeline import Settlements

    told: list[int] = []
    settled = Settlements(lambda index, _: told.append(index))
    first = Settlement(DlqMessage("m", "r", "{}"), 0, Release())
    settled.settle(3, first)
    assert told == [3]  # the sink hears it as it is made: the batch settles it then
    assert settled[3] is first
    with pytest.raises(AssertionError, match="settled twice"):
        settled.settle(3, first)
    assert told == [3]


def test_group_rounds_take_each_group_in_order_and_stop_a_refused_one():
    """The one FIFO-round implementation, the daemon's and the replay's (core/rounds.py)."""
    from worker.core.rounds import GroupRounds

    items = ["a1", "b1", "a2", "c1", "b2", "a3", "c2"]
    rounds = GroupRounds(items, lambda item: item[0])
    first = rounds.next_round()
    assert first == ["a1", "b1", "c1"]  # the head of every group, side by side
    assert rounds.refused("b1") == ["b2"]  # b's head refused: the rest of b waits for it
    assert rounds.drop(lambda item: item == "c2") == ["c2"]  # a group whose lease lapsed
    assert rounds.next_round() == ["a2"]
    assert rounds.refused("a2") == ["a3"]
    assert not rounds
    assert rounds.next_round() == []


def test_group_rounds_hand_back_nothing_behind_the_last_of_a_group():
    from worker.core.rounds import GroupRounds

    rounds = GroupRounds(["x1", "y1", "y2"], lambda item: item[0])
    assert rounds.next_round() == ["x1", "y1"]
    assert rounds.refused("x1") == []  # x had no more: nothing waits
    assert rounds.next_round() == ["y2"]
    assert not rounds
