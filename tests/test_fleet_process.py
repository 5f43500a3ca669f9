"""Three daemons as processes against one emulator (SQS, Lambda, DynamoDB): one budget for
the fleet with coordination, three without; a dead target probed by one replica; a killed
replica's share taken by the others; the table failing for 30 s."""

from __future__ import annotations

import itertools
import json
import time

import anyio
import pytest

from tests.fleet import (
    HEARTBEAT,
    TABLE,
    Daemon,
    fleet_config,
    max_in_window,
    start_fleet,
    stop_fleet,
)
from tests.helpers import depth, drain, wait_for
from tests.test_http import aget
from worker.emulator import create_coordination_table, create_function, create_queue
from worker.emulator.proxy import Rule

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

RATE, BURST = 10.0, 10
REPLICAS = 3


def _queues(function: str, **target: object) -> dict:
    limit = {"rate_limit": {"per_second": RATE, "burst": BURST}}
    return {
        "orders": {
            "name": "orders-dlq",
            "target": {"kind": "lambda", "function": function, **limit, **target},
        }
    }


async def _seed(aws, url: str, count: int) -> None:
    for start in range(0, count, 10):
        entries = [
            {"Id": str(i), "MessageBody": json.dumps({"n": i})}
            for i in range(start, min(count, start + 10))
        ]
        await aws.sqs.send_message_batch(QueueUrl=url, Entries=entries)


@pytest.fixture
async def setup(aws, proxy):
    await create_function(aws.lambda_, "orders")
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parked = await create_queue(aws.sqs, "parked")
    await create_coordination_table(await aws.client("dynamodb"), TABLE)
    return dlq, parked


def _steady_rate(times: list[float]) -> float:
    """Calls per second after the burst: from the call after it to the last."""
    steady = times[BURST:]
    return (len(steady) - 1) / (steady[-1] - steady[0])


async def _run_fleet(aws, proxy, tmp_path, dlq: str, backend: str, count: int) -> list[float]:
    config = fleet_config(proxy.url, backend, _queues("orders"))
    daemons = [Daemon(tmp_path, i, config) for i in range(REPLICAS)]
    try:
        await start_fleet(daemons, members=REPLICAS if backend == "dynamodb" else None)
        proxy.clear()
        await _seed(aws, dlq, count)
        await wait_for(lambda: proxy.count("lambda", "Invoke") >= count, timeout=120, interval=0.2)
        times = proxy.times("lambda", "Invoke")
    finally:
        codes = await stop_fleet(daemons)
    assert codes == [0] * REPLICAS, codes  # each stopped cleanly on SIGTERM
    return times


@pytest.mark.timeout(300)
async def test_the_fleet_keeps_to_one_rate_and_without_coordination_triples_it(
    aws, proxy, setup, tmp_path
):
    dlq, _ = setup
    shared = await _run_fleet(aws, proxy, tmp_path / "shared", dlq, "dynamodb", 300)
    alone = await _run_fleet(aws, proxy, tmp_path / "alone", dlq, "none", 300)

    rate = _steady_rate(shared)
    assert 0.8 * RATE <= rate <= 1.1 * RATE, rate
    # in any 5 s, no more than the rate allows (+ the fleet's one burst, + one call of slack)
    assert max_in_window(shared, 5.0) <= RATE * 5 + BURST + 1
    assert _steady_rate(alone) >= 2.5 * RATE  # each replica took the whole budget


MIN_CALLS, PROBES, OPEN_SECONDS, CONCURRENCY = 10, 3, 4.0, 5


def _cycles(times: list[float]) -> list[list[float]]:
    """Calls grouped by open cycle: a pause of half the open time starts a new cycle."""
    cycles: list[list[float]] = []
    for t in times:
        if not cycles or t - cycles[-1][-1] > OPEN_SECONDS / 2:
            cycles.append([])
        cycles[-1].append(t)
    return cycles


@pytest.mark.timeout(180)
async def test_a_dead_target_is_probed_by_one_replica_and_nobody_receives_meanwhile(
    aws, proxy, setup, tmp_path
):
    dlq, _ = setup
    breaker = {
        "window": 20,
        "minimum_calls": MIN_CALLS,
        "open_seconds": OPEN_SECONDS,
        "max_open_seconds": OPEN_SECONDS,
        "half_open_probes": PROBES,
    }
    queues = _queues("orders", circuit_breaker=breaker)
    queues["orders"]["target"]["rate_limit"] = {"per_second": 100, "burst": 100}
    config = fleet_config(
        proxy.url,
        "dynamodb",
        queues,
        concurrency=CONCURRENCY,
        receive={"batch_size": CONCURRENCY, "wait_seconds": 1, "idle_max_interval_seconds": 0},
        policy={"parking_queue": "parked", "max_attempts": 100},
    )
    daemons = [Daemon(tmp_path, i, config) for i in range(REPLICAS)]
    try:
        await start_fleet(daemons, members=REPLICAS)
        proxy.clear()
        proxy.add(Rule("lambda", "Invoke", "error", status=500, code="ServiceException"))
        await _seed(aws, dlq, 60)
        await wait_for(
            lambda: len(_cycles(proxy.times("lambda", "Invoke"))) >= 5, timeout=90, interval=0.2
        )
        invokes = proxy.times("lambda", "Invoke")
        callers = dict(proxy.callers("lambda", "Invoke"))
        receives = proxy.times("sqs", "ReceiveMessage")
    finally:
        codes = await stop_fleet(daemons)
    assert codes == [0] * REPLICAS, codes

    cycles = _cycles(invokes)[:4]  # the last may still be under way
    first, probes = cycles[0], cycles[1:]
    # the opening cycle: minimum_calls + probes, plus what the others had in flight
    assert len(first) <= MIN_CALLS + PROBES + (REPLICAS - 1) * CONCURRENCY, len(first)
    # every later cycle: one replica's probes (three replicas probing would make 9)
    assert [len(c) for c in probes] == [PROBES] * len(probes), cycles
    probers = [{callers[t] for t in cycle} for cycle in probes]
    assert [len(p) for p in probers] == [1] * len(probes), probers  # one replica per cycle
    # while open, after one heartbeat (and a long poll under way), nobody receives
    for ended, cycle in itertools.pairwise(cycles):
        quiet_from = ended[-1] + HEARTBEAT + 1 + 0.5
        quiet_until = cycle[0] - 0.3
        assert not [t for t in receives if quiet_from < t < quiet_until]


@pytest.mark.timeout(180)
async def test_the_others_take_a_killed_replicas_share_within_three_heartbeats(
    aws, proxy, setup, tmp_path
):
    dlq, _ = setup
    config = fleet_config(proxy.url, "dynamodb", _queues("orders"))
    daemons = [Daemon(tmp_path, i, config) for i in range(REPLICAS)]
    try:
        await start_fleet(daemons, members=REPLICAS)
        killed_at = time.time()
        daemons[0].kill()
        survivors = daemons[1:]

        async def shares_taken() -> bool:
            seen = [await d.value("retry_worker_coordination_members") for d in survivors]
            return seen == [2, 2]

        await wait_for(shares_taken, timeout=30, interval=0.1)
        # when each survivor saw it, by its own log (not when this busy process asked)
        saw = [d.first_time("coordination_members", killed_at, members=2) for d in survivors]
        proxy.clear()
        await _seed(aws, dlq, 150)
        await wait_for(lambda: proxy.count("lambda", "Invoke") >= 150, timeout=90, interval=0.2)
        invokes = proxy.times("lambda", "Invoke")
    finally:
        for daemon in daemons:
            daemon.kill()
    assert None not in saw, [d.events("coordination_members") for d in survivors]
    took = [t - killed_at for t in saw if t is not None]
    assert min(took) >= 0, took
    assert max(took) <= 3 * HEARTBEAT + 0.5, took
    assert 0.8 * RATE <= _steady_rate(invokes) <= 1.1 * RATE  # two replicas, the whole rate


OUTAGE_SECONDS = 30.0


@pytest.mark.timeout(240)
async def test_the_table_failing_for_30s_loses_nothing_and_keeps_the_rate(
    aws, proxy, setup, tmp_path
):
    dlq, parked = setup
    count = 300
    config = fleet_config(proxy.url, "dynamodb", _queues("orders"))
    daemons = [Daemon(tmp_path, i, config) for i in range(REPLICAS)]
    try:
        await start_fleet(daemons, members=REPLICAS)
        pids = [d.process.pid for d in daemons if d.process]
        proxy.clear()
        outage = proxy.add(Rule("dynamodb", None, "error", status=500, code="InternalServerError"))
        await _seed(aws, dlq, count)
        started = time.monotonic()

        async def all_degraded() -> bool:
            return all([await d.value("retry_worker_coordination_degraded") == 1 for d in daemons])

        await wait_for(all_degraded, timeout=10, interval=0.2)
        for daemon in daemons:  # still ready, and saying why it is degraded
            status, text = await aget(f"http://127.0.0.1:{daemon.port}/readyz?verbose")
            assert status == 200
            assert "[!] coordination degraded (InternalServerError)" in text
        await anyio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - started)))  # the outage
        proxy.rules.remove(outage)
        during = [t for t in proxy.times("lambda", "Invoke") if t < started + OUTAGE_SECONDS]

        async def recovered() -> bool:
            values = [await d.value("retry_worker_coordination_degraded") for d in daemons]
            return values == [0, 0, 0]

        await wait_for(recovered, timeout=10, interval=0.2)
        await wait_for(lambda: proxy.count("lambda", "Invoke") >= count, timeout=90, interval=0.2)
        await wait_for(lambda: _empty(aws, dlq), timeout=60, interval=0.2)
        assert [d.process.pid for d in daemons if d.process] == pids  # no restart
        delivered = {body["n"] for body in proxy.accepted_requests("lambda", "Invoke")}
    finally:
        codes = await stop_fleet(daemons)
    assert codes == [0] * REPLICAS, codes
    assert delivered == set(range(count))  # nothing lost
    assert await depth(aws.sqs, parked) == 0
    # each kept its last share: the fleet's rate, never each replica's full rate, nor none
    assert 0.8 * RATE <= _steady_rate(during) <= 1.1 * RATE
    assert max_in_window(during, 5.0) <= RATE * 5 + BURST + 1
    for daemon in daemons:
        log = daemon.log()
        assert '"coordination_degraded"' in log
        assert '"coordination_recovered"' in log


async def _empty(aws, url: str) -> bool:
    return await depth(aws.sqs, url) == 0


LOOPING = 10


@pytest.mark.timeout(180)
async def test_a_loop_is_caught_after_max_attempts_cycles_whichever_replica_sees_them(
    aws, proxy, setup, tmp_path
):
    """A Lambda `Event` invoke hands off; the function's failure path (played here by the
    test) sends the payload back to the DLQ as a new message. Counted in the table, each
    payload is delivered max_attempts - 1 times across the fleet and then parked; counted
    per replica, the cycles spread over three replicas would run up to three times longer."""
    dlq, parked = setup
    queues = _queues("orders", invocation_type="Event")
    config = fleet_config(
        proxy.url, "dynamodb", queues, policy={"parking_queue": "parked", "max_attempts": 3}
    )
    daemons = [Daemon(tmp_path, i, config) for i in range(REPLICAS)]
    echoed = 0

    async def loop_back_until_parked() -> bool:
        nonlocal echoed
        invoked = proxy.accepted_requests("lambda", "Invoke")
        for body in invoked[echoed:]:
            await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(body))
        echoed = len(invoked)
        return await depth(aws.sqs, parked) == LOOPING

    try:
        await start_fleet(daemons, members=REPLICAS)
        proxy.clear()
        for n in range(LOOPING):
            await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"loop": n}))
        await wait_for(loop_back_until_parked, timeout=120, interval=0.2)
        invoked = [body["loop"] for body in proxy.accepted_requests("lambda", "Invoke")]
    finally:
        codes = await stop_fleet(daemons)
    assert codes == [0] * REPLICAS, codes
    assert sorted(invoked) == sorted(list(range(LOOPING)) * 2)
    reasons = [
        m["MessageAttributes"]["retry-worker.reason"]["StringValue"]
        for m in await drain(aws.sqs, parked)
    ]
    assert reasons == ["loop_detected"] * LOOPING
