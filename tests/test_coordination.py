"""Coordination, step by step: two replicas' coordinators against one emulated DynamoDB table
(through the fault proxy), on a shared fake clock, driving heartbeats by hand."""

from __future__ import annotations

import json
import time
from contextlib import AsyncExitStack

import anyio
import pytest
from prometheus_client import CollectorRegistry

from worker.aws.clients import Clients
from worker.core.breaker import State
from worker.core.errors import DeliveryError, ErrorKind
from worker.emulator import create_coordination_table
from worker.emulator.proxy import Rule
from worker.fleet.coordinator import Coordinator
from worker.fleet.loops import SharedLoops
from worker.fleet.table import CoordinationTable
from worker.metrics import Metrics
from worker.settings import (
    AwsSettings,
    CircuitBreakerSettings,
    CoordinationSettings,
    RateLimitSettings,
)
from worker.targets.guard import Guard

pytestmark = pytest.mark.anyio

KEY = "lambda:orders"
HEARTBEAT = 10.0
FAILED = DeliveryError("ServiceException", ErrorKind.RETRYABLE)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_800_000_000.0 + self.now


class RealClock:
    __call__ = staticmethod(time.monotonic)
    wall = staticmethod(time.time)


class Replica:
    def __init__(
        self,
        name: str,
        table: CoordinationTable,
        clock: Clock | RealClock,
        heartbeat: float = 10,
        *,
        key: str = KEY,
    ) -> None:
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        settings = CoordinationSettings(
            backend="dynamodb", table=table.table, heartbeat_seconds=heartbeat
        )
        guards: dict[str, Guard] = {}
        self.fleet = Coordinator(
            settings, table, guards, self.metrics, me=name, clock=clock, wall=clock.wall
        )
        self.guard = Guard(
            key.split(":", 1)[-1],
            RateLimitSettings(per_second=10, burst=20),
            CircuitBreakerSettings(window=10, minimum_calls=6, open_seconds=30, half_open_probes=2),
            self.metrics,
            key=key,
            fleet=self.fleet,
            clock=clock,
        )
        guards[key] = self.guard
        self.loops = SharedLoops(table, self.fleet)

    def trip(self) -> int:
        calls = 0
        while self.guard.breaker.state is not State.OPEN:
            self.guard.record(FAILED)
            calls += 1
        return calls

    def gauge(self, name: str) -> float | None:
        return self.registry.get_sample_value(name)


@pytest.fixture
async def fleet(aws, proxy):
    async with AsyncExitStack() as stack:
        clients = Clients(AwsSettings(endpoint_url=proxy.url, sdk_max_attempts=1), stack, pool=4)
        client = await clients.get("dynamodb")
        await create_coordination_table(client, "coordination")
        clock = Clock()
        table = CoordinationTable(client, "coordination", wall=clock.wall)
        a, b = Replica("a", table, clock), Replica("b", table, clock)
        for replica in (a, b, a):  # A has seen B's first beat too
            await replica.fleet.heartbeat()
        yield a, b, clock


async def open_then_half_open(a: Replica, b: Replica, clock: Clock) -> None:
    """A trips and publishes, B adopts on its heartbeat, the open time passes."""
    a.trip()
    await a.fleet.flush()
    await b.fleet.heartbeat()
    clock.now += 30.0
    a.guard.breaker.state  # noqa: B018 - half-open now (lazily)
    b.guard.breaker.state  # noqa: B018


async def test_replicas_split_the_rate_and_the_breaker_window(fleet):
    a, b, _ = fleet
    assert (a.fleet.members, b.fleet.members) == (2, 2)
    assert a.guard.bucket.ceiling == pytest.approx(5.0)
    assert a.guard.bucket.burst == pytest.approx(10.0)
    assert a.gauge("retry_worker_coordination_members") == 2
    # 6 calls for the fleet: 3 each (never fewer than 3)
    assert a.trip() == 3


async def test_a_heartbeat_is_two_requests(fleet, proxy):
    a, _, clock = fleet
    proxy.clear()
    for _ in range(5):
        clock.now += HEARTBEAT
        await a.fleet.heartbeat()
    assert proxy.count("dynamodb") == 10
    assert proxy.count("dynamodb", "UpdateItem") == proxy.count("dynamodb", "Query") == 5


async def test_a_member_that_stops_beating_is_gone_after_three_heartbeats(fleet):
    a, b, clock = fleet
    for _ in range(2):
        clock.now += HEARTBEAT
        await a.fleet.heartbeat()
        assert a.fleet.members == 2  # B missed one, then two heartbeats
    clock.now += HEARTBEAT
    await a.fleet.heartbeat()
    assert a.fleet.members == 1
    assert a.guard.bucket.ceiling == pytest.approx(10.0)
    await b.fleet.heartbeat()  # B comes back: a new beat, a member again
    await a.fleet.heartbeat()
    assert a.fleet.members == 2


async def test_a_replica_that_leaves_gives_its_share_back_at_once(fleet):
    a, b, _ = fleet
    await b.fleet.leave()
    await a.fleet.heartbeat()
    assert a.fleet.members == 1


async def test_an_open_breaker_is_adopted_and_one_replica_probes(fleet):
    a, b, clock = fleet
    a.trip()
    await a.fleet.flush()  # published at once
    assert b.guard.breaker.state is State.CLOSED
    await b.fleet.heartbeat()
    assert b.guard.breaker.state is State.OPEN
    assert b.guard.breaker.seconds_until_half_open() == pytest.approx(30.0, abs=0.01)
    assert b.guard.receive_limit() == 0

    clock.now += 30.0
    assert (a.guard.breaker.state, b.guard.breaker.state) == (State.HALF_OPEN, State.HALF_OPEN)
    await b.fleet.flush()  # B asks first and gets the lease
    await a.fleet.flush()
    assert b.guard.receive_limit() == 2
    assert a.guard.receive_limit() == 0
    assert await a.guard.admit(5) == 0  # a batch A received before: not probed

    assert await b.guard.admit(5) == 2
    b.guard.record(None)
    b.guard.record(None)
    assert b.guard.breaker.state is State.CLOSED
    await b.fleet.flush()
    await a.fleet.heartbeat()
    assert a.guard.breaker.state is State.CLOSED
    assert a.guard.receive_limit() is None


async def test_a_failed_probe_reopens_every_replica_for_longer(fleet):
    a, b, clock = fleet
    await open_then_half_open(a, b, clock)
    await a.fleet.flush()
    assert await a.guard.admit(2) == 2
    a.guard.record(FAILED)  # the probe failed: open again, twice as long
    await a.fleet.flush()
    await b.fleet.heartbeat()
    assert b.guard.breaker.state is State.OPEN
    assert b.guard.breaker.seconds_until_half_open() == pytest.approx(60.0, abs=0.01)
    assert b.guard.breaker.trips == 2


async def test_a_shorter_open_never_replaces_a_longer_one(fleet):
    a, b, clock = fleet
    await open_then_half_open(a, b, clock)
    await a.fleet.flush()
    assert await a.guard.admit(2) == 2
    a.guard.record(FAILED)  # A re-trips: 60 s, published
    await a.fleet.flush()
    b.guard.adopt(None)  # B, not having read it yet, trips on its own for 30 s
    b.trip()
    await b.fleet.flush()  # refused by the table: a longer open stands
    await b.fleet.heartbeat()
    assert b.guard.breaker.seconds_until_half_open() == pytest.approx(60.0, abs=0.01)
    await a.fleet.heartbeat()
    assert a.guard.breaker.seconds_until_half_open() == pytest.approx(60.0, abs=0.01)


async def test_a_quiet_prober_loses_its_lease(fleet):
    a, b, clock = fleet
    await open_then_half_open(a, b, clock)
    await a.fleet.flush()
    await b.fleet.flush()
    assert (a.guard.receive_limit(), b.guard.receive_limit()) == (2, 0)
    clock.now += 3 * HEARTBEAT + 1  # A died while probing: its lease ran out
    await b.fleet.heartbeat()
    await b.fleet.flush()
    assert b.guard.receive_limit() == 2


async def test_loops_are_counted_across_replicas(fleet):
    a, b, _ = fleet
    assert await a.loops.counts([("fp", "m1")]) == [1]
    assert await b.loops.counts([("fp", "m2"), ("other", "m3")]) == [2, 1]
    assert await a.loops.counts([("fp", "m1")]) == [2]  # the same DLQ message: not a new one
    assert await a.loops.counts([("fp", "m4")]) == [3]


async def test_a_failing_table_keeps_the_last_share_and_recovers(fleet, proxy):
    a, _, clock = fleet
    proxy.add(Rule("dynamodb", None, "error", status=500, code="InternalServerError"))
    await a.fleet.heartbeat()
    assert a.fleet.degraded == "InternalServerError"
    assert a.gauge("retry_worker_coordination_degraded") == 1
    assert a.guard.bucket.ceiling == pytest.approx(5.0)  # never back to the full rate
    assert a.fleet.notes() == [
        "coordination degraded (InternalServerError): keeping a share of 1/2"
    ]
    errors = a.registry.get_sample_value(
        "retry_worker_aws_errors_total",
        {"service": "dynamodb", "operation": "Heartbeat", "error": "InternalServerError"},
    )
    assert errors == 1
    # loops are counted locally, without a call per message while degraded
    before = proxy.count("dynamodb")
    assert await a.loops.counts([("fp", "m1")]) == [1]
    assert proxy.count("dynamodb") == before
    # a half-open breaker probes on its own, as one process would
    a.trip()
    clock.now += 30.0
    a.guard.breaker.state  # noqa: B018
    await a.fleet.flush()
    assert a.guard.receive_limit() == 2

    proxy.rules.clear()
    await a.fleet.heartbeat()
    assert a.fleet.degraded is None
    assert a.gauge("retry_worker_coordination_degraded") == 0
    assert a.fleet.notes() == []


async def test_a_replica_that_boots_without_the_table_takes_a_small_share(aws, proxy):
    proxy.add(Rule("dynamodb", None, "error", status=500, code="InternalServerError"))
    async with AsyncExitStack() as stack:
        clients = Clients(AwsSettings(endpoint_url=proxy.url, sdk_max_attempts=1), stack, pool=4)
        table = CoordinationTable(await clients.get("dynamodb"), "coordination")
        replica = Replica("c", table, Clock())
        await replica.fleet.start()
    assert replica.fleet.degraded == "InternalServerError"
    assert replica.guard.bucket.ceiling == pytest.approx(1.0)  # 10/s over 10 assumed members


async def test_a_joining_replica_delivers_only_once_the_others_count_it(aws, proxy):
    async with AsyncExitStack() as stack:
        clients = Clients(AwsSettings(endpoint_url=proxy.url, sdk_max_attempts=1), stack, pool=4)
        client = await clients.get("dynamodb")
        await create_coordination_table(client, "coordination")
        table = CoordinationTable(client, "coordination")
        a, c = Replica("a", table, RealClock(), 0.5), Replica("c", table, RealClock(), 0.5)
        await a.fleet.start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.fleet.run)
            await c.fleet.start()  # then C's queues would start delivering
            assert (a.fleet.members, c.fleet.members) == (2, 2)
            assert a.guard.bucket.ceiling == pytest.approx(5.0)
            tg.cancel_scope.cancel()


async def test_during_an_outage_a_replica_waiting_on_another_prober_probes_on_its_own(fleet, proxy):
    """Issue 18, defect 6: while the table failed and another replica held the probe lease,
    this replica allowed 0 calls and asked again only after a successful read — its queues
    stopped for the whole outage, and nobody delivered if the holder was gone."""
    a, b, clock = fleet
    await open_then_half_open(a, b, clock)
    await a.fleet.flush()  # A takes the lease
    await b.fleet.flush()
    assert b.guard.receive_limit() == 0  # B waits for A's probes
    proxy.add(Rule("dynamodb", None, "error", status=500, code="InternalServerError"))
    await b.fleet.heartbeat()  # the table fails: degraded means local
    assert b.fleet.degraded == "InternalServerError"
    assert b.guard.receive_limit() == 2
    assert await b.guard.admit(2) == 2

    proxy.rules.clear()  # back: the fleet decides who probes again
    await b.fleet.heartbeat()
    await b.fleet.flush()
    assert b.guard.receive_limit() == 0


async def test_one_failed_publish_does_not_hold_back_the_others(fleet, proxy):
    a, _, _ = fleet
    other = Guard(
        "payments",
        RateLimitSettings(per_second=10, burst=20),
        CircuitBreakerSettings(window=10, minimum_calls=6, open_seconds=30),
        a.metrics,
        key="lambda:payments",
        fleet=a.fleet,
    )
    a.fleet.breakers._guards["lambda:payments"] = other
    a.trip()
    while other.breaker.state is not State.OPEN:
        other.record(FAILED)
    # The first publish fails (the table's error), the second goes through.
    proxy.add(Rule("dynamodb", None, "error", status=500, code="InternalServerError", times=1))
    await a.fleet.flush()
    published = [r for r in proxy.requests("dynamodb", "UpdateItem") if "payments" in json.dumps(r)]
    assert published, "the second target's open was published in the same flush"


async def test_only_one_of_many_replicas_asking_at_once_gets_the_probe_lease(aws):
    """DynamoDB checks a condition and writes at once; the emulator must too (its server
    answers on many threads), or two replicas could both probe."""
    async with AsyncExitStack() as stack:
        clients = Clients(AwsSettings(endpoint_url=aws.url, sdk_max_attempts=1), stack, pool=40)
        client = await clients.get("dynamodb")
        await create_coordination_table(client, "leases")
        table = CoordinationTable(client, "leases")
        for round_ in range(5):
            key = f"lambda:t{round_}"
            results: list[bool] = []

            async def ask(me: str, key: str = key, results: list[bool] = results) -> None:
                results.append(await table.lease(key, me, 30.0))

            async with anyio.create_task_group() as tg:
                for i in range(30):
                    tg.start_soon(ask, f"replica-{i}")
            assert results.count(True) == 1, results
