"""A dead target is not hammered: its breaker opens and its queue stops receiving."""

from __future__ import annotations

import anyio
import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import depth, wait_for
from worker.emulator import create_function, create_queue
from worker.emulator.proxy import Rule

pytestmark = pytest.mark.anyio
MINIMUM_CALLS, PROBES = 5, 2


async def test_dead_target_gets_minimum_calls_plus_probes_and_no_idle_receives(
    aws, proxy, worker_stack
):
    await create_function(aws.lambda_, "dead")
    dlq = await create_queue(aws.sqs, "dead-dlq")
    await create_queue(aws.sqs, "parked")
    for start in range(0, 20, 10):
        entries = [{"Id": str(i), "MessageBody": f'{{"n": {i}}}'} for i in range(start, start + 10)]
        await aws.sqs.send_message_batch(QueueUrl=dlq, Entries=entries)
    queue = {
        "name": "dead-dlq",
        "concurrency": MINIMUM_CALLS,
        "receive": {"batch_size": MINIMUM_CALLS, "wait_seconds": 1},
        "target": {"kind": "lambda", "function": "dead"},
        "policy": {"max_attempts": 1000, "backoff": {"initial_seconds": 0}},
        "circuit_breaker": {
            "window": 10,
            "minimum_calls": MINIMUM_CALLS,
            "failure_rate_threshold": 0.5,
            "open_seconds": 0.5,
            "max_open_seconds": 1,
            "half_open_probes": PROBES,
        },
    }
    worker = Worker(make_settings(proxy.url, {"dead": queue}), worker_stack)
    poller = await worker.poller("dead")
    proxy.add(Rule("lambda", "Invoke", "error", status=500, code="ServiceException"))

    def trips() -> float:
        value = worker.registry.get_sample_value(
            "retry_worker_circuit_transitions_total", {"target": "dead", "state": "open"}
        )
        return value or 0

    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run)
        await wait_for(lambda: trips() >= 4, timeout=30)  # opened, then re-tripped 3 times
        poller.stop_receiving()

    half_opens = int(trips()) - 1  # every trip after the first followed a half-open
    calls = proxy.count("lambda", "Invoke")
    receives = proxy.count("sqs", "ReceiveMessage")
    assert calls == MINIMUM_CALLS + PROBES * half_opens
    # one receive before the breaker opened, then exactly one per half-open (the probes)
    assert receives == 1 + half_opens
    state = worker.registry.get_sample_value("retry_worker_circuit_state", {"target": "dead"})
    assert state in (1, 2)  # open or half-open: never closed while the target is dead
    assert await depth(aws.sqs, dlq) == 20, "nothing was lost or parked meanwhile"
