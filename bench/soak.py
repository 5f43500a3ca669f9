"""`make soak`: a fleet drains a backlog through a rolling deploy and its faults.

Replicas with coordination (DynamoDB) run as processes on the emulator (moto) behind the
fault proxy; four queues: a Lambda called synchronously, a Lambda invoked asynchronously (the
loop guard counts its payloads in the table), an SQS queue, a FIFO queue to a FIFO queue; a
budget (fleet-wide rate limit) on both Lambdas. During the drain, on a timeline: a rolling
restart (SIGTERM each replica in turn, start it again once it has exited), two SIGKILLs (the
replica started again), the table refusing every call, the synchronous Lambda throttling, a
replica joining and one leaving.

The report: lost (must be 0), parked (0), delivered twice (within the bound: what was in flight
at each SIGKILL plus what a replica logged it could not delete; 0 at the FIFO target), the
fleet's calls to each budgeted target in every 5 s window against its budget, the time to
drain, the peak RSS of each replica. Exits non-zero when a promise is broken.

    python -m bench.soak [--messages 20000]       # make soak
`tests/test_soak.py` runs the same with a few hundred messages and a short timeline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from aiobotocore.session import get_session

from bench.fast import peak_rss_mb
from bench.redrive import ENV
from tests.fleet import Daemon, busiest_window, fleet_config
from tests.helpers import depth, drain
from worker.emulator import (
    MotoServer,
    create_coordination_table,
    create_function,
    create_queue,
    create_role,
)
from worker.emulator.proxy import FaultProxy, Rule

WINDOW = 5.0
TABLE = "coordination"


@dataclass(frozen=True)
class Plan:
    """What runs when (seconds from the start of the drain)."""

    messages: int = 20_000
    replicas: int = 3
    budgets: tuple[tuple[float, int], tuple[float, int]] = ((40.0, 20), (60.0, 30))
    rolling_at: float = 10.0
    kills_at: tuple[float, float] = (45.0, 75.0)
    outage_at: float = 55.0
    outage: float = 30.0
    throttle_at: float = 60.0
    throttle: float = 30.0
    join_at: float = 100.0
    leave_at: float = 115.0
    deadline: float = 840.0  # the drain must end within this
    heartbeat: float = 1.0


CI = Plan(
    messages=400,
    budgets=((15.0, 5), (20.0, 5)),
    rolling_at=1.0,
    kills_at=(4.0, 9.0),
    outage_at=5.0,
    outage=5.0,
    throttle_at=6.0,
    throttle=5.0,
    join_at=11.0,
    leave_at=13.0,
    deadline=150.0,
)

QUEUES = ("sync", "async", "sqs", "fifo")


@dataclass
class Report:
    plan: Plan
    drained: float = 0.0
    lost: int = 0
    parked: int = 0
    twice: Counter[str] = field(default_factory=Counter)
    bound: int = 0
    in_flight_at_kills: list[int] = field(default_factory=list)
    undeleted: int = 0
    # by target: the most calls in a window, its start (s from the start), the budget
    windows: dict[str, tuple[int, float, int]] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)

    def broken(self) -> list[str]:
        broken = []
        if self.lost:
            broken.append(f"{self.lost} lost")
        if self.parked:
            broken.append(f"{self.parked} parked")
        if self.twice["fifo"]:
            broken.append(f"{self.twice['fifo']} delivered twice to the FIFO target")
        if sum(self.twice.values()) > self.bound:
            broken.append(f"{sum(self.twice.values())} delivered twice, bound {self.bound}")
        for target, (worst, _, allowed) in self.windows.items():
            if worst > allowed:
                broken.append(f"{target}: {worst} calls in {WINDOW:g} s, budget {allowed}")
        if self.drained <= 0:
            broken.append("the backlog did not drain before the deadline")
        return broken

    def text(self) -> str:
        p = self.plan
        lines = [
            f"{p.messages} messages over {len(QUEUES)} queues, {p.replicas} replicas "
            f"(one more joins, one leaves), coordination on",
            *(f"  {event}" for event in self.events),
            f"drained in {self.drained:.1f} s" if self.drained else "NOT drained",
            f"lost {self.lost}, parked {self.parked}",
            "delivered twice: "
            + ", ".join(f"{q} {self.twice[q]}" for q in QUEUES)
            + f" (bound {self.bound}: in flight at the SIGKILLs {self.in_flight_at_kills}, "
            f"logged undeleted {self.undeleted}; FIFO must be 0)",
        ]
        for target, (worst, at, allowed) in self.windows.items():
            lines.append(
                f"budget {target}: at most {worst} calls in any {WINDOW:g} s window "
                f"(from {at:.1f} s; allowed {allowed})"
            )
        lines.append(
            "peak RSS MB: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(self.rss.items()))
        )
        broken = self.broken()
        lines.append("BROKEN: " + "; ".join(broken) if broken else "every promise kept")
        return "\n".join(lines)


def _sqs_body(queue: str, n: int) -> str:
    return json.dumps({"q": queue, "n": n})


async def _setup(aws: Any, dynamodb: Any) -> dict[str, str]:
    await create_function(aws.lambda_, "soak-sync")
    await create_function(aws.lambda_, "soak-async")
    await create_coordination_table(dynamodb, TABLE)
    urls = {
        "sync": await create_queue(aws.sqs, "sync-dlq"),
        "async": await create_queue(aws.sqs, "async-dlq"),
        "sqs": await create_queue(aws.sqs, "sqs-dlq"),
        "fifo": await create_queue(aws.sqs, "fifo-dlq.fifo", FifoQueue="true"),
        "out": await create_queue(aws.sqs, "soak-out"),
        "out.fifo": await create_queue(aws.sqs, "soak-out.fifo", FifoQueue="true"),
        "parked": await create_queue(aws.sqs, "parked"),
    }
    return urls


async def _seed(aws: Any, urls: dict[str, str], messages: int) -> None:
    per_queue = messages // len(QUEUES)

    async def fill(queue: str) -> None:
        for start in range(0, per_queue, 10):
            entries = []
            for n in range(start, min(per_queue, start + 10)):
                entry: dict[str, Any] = {"Id": str(n - start), "MessageBody": _sqs_body(queue, n)}
                if queue == "fifo":
                    entry |= {"MessageGroupId": f"g{n % 16}", "MessageDeduplicationId": f"{n}"}
                entries.append(entry)
            await aws.sqs.send_message_batch(QueueUrl=urls[queue], Entries=entries)

    async with anyio.create_task_group() as tg:
        for queue in QUEUES:
            tg.start_soon(fill, queue)


def _config(endpoint: str, plan: Plan) -> dict[str, Any]:
    (sync_rate, sync_burst), (async_rate, async_burst) = plan.budgets

    def lambda_queue(name: str, function: str, rate: float, burst: int, **target: Any) -> dict:
        return {
            "name": f"{name}-dlq",
            "target": {"kind": "lambda", "function": function, **target},
            "rate_limit": {"per_second": rate, "burst": burst},
        }

    queues = {
        "sync": lambda_queue("sync", "soak-sync", sync_rate, sync_burst),
        "async": lambda_queue(
            "async", "soak-async", async_rate, async_burst, invocation_type="Event"
        ),
        "sqs": {"name": "sqs-dlq", "target": {"kind": "sqs", "queue": "soak-out"}},
        "fifo": {"name": "fifo-dlq.fifo", "target": {"kind": "sqs", "queue": "soak-out.fifo"}},
    }
    config = fleet_config(
        endpoint,
        "dynamodb",
        queues,
        concurrency=20,
        rate_limit={"per_second": 1000, "burst": 200},
        policy={
            "parking_queue": "parked",
            "max_attempts": 50,  # a throttled spell must not burn a message's attempts
            "backoff": {"initial_seconds": 1, "max_seconds": 4, "jitter": "full"},
        },
        circuit_breaker={"open_seconds": 2, "max_open_seconds": 8},
    )
    # 1 s, as in the fleet tests (the default is 10 s): the table lives in the same emulator
    # as the queues being drained, and under that load its answers come late enough for a
    # member to be counted out for a second now and then (measured); the budget still holds.
    config["coordination"]["heartbeat_seconds"] = plan.heartbeat
    config["defaults"]["receive"] = {
        "batch_size": 10,
        "wait_seconds": 1,
        "visibility_timeout_seconds": 20,
    }
    return config


class Fleet:
    def __init__(self, folder: Path, config: dict[str, Any], report: Report) -> None:
        self._folder = folder
        self._config = config
        self._report = report
        self._made = 0
        self.slots: dict[str, Daemon] = {}

    def add(self, slot: str) -> Daemon:
        daemon = Daemon(self._folder / slot, self._made, self._config)
        self._made += 1
        self.slots[slot] = daemon.start()
        return daemon

    def _keep_rss(self, slot: str, daemon: Daemon) -> None:
        if daemon.process is None or daemon.process.poll() is not None:
            return
        peak = peak_rss_mb(daemon.process.pid)
        self._report.rss[slot] = max(self._report.rss.get(slot, 0.0), peak)

    async def stop(self, slot: str) -> None:
        daemon = self.slots[slot]
        self._keep_rss(slot, daemon)
        await daemon.stop()

    async def kill(self, slot: str) -> None:
        """SIGKILL a replica while it holds messages (waiting up to 10 s for a moment when it
        does): a kill that finds nothing in flight tests nothing, and the report says so."""
        daemon = self.slots[slot]
        self._keep_rss(slot, daemon)
        deadline = time.monotonic() + 10
        while True:
            samples = await daemon.metrics()
            in_flight = sum(
                v for (name, _), v in samples.items() if name.endswith("inflight_messages")
            )
            if in_flight > 0 or time.monotonic() > deadline:
                break
            await anyio.sleep(0.05)  # polling the replica's gauge, not waiting for time
        daemon.kill()
        self._report.in_flight_at_kills.append(int(in_flight))

    async def ready(self, slot: str) -> None:
        daemon = self.slots[slot]
        deadline = time.monotonic() + 60
        while not await daemon.ready():
            if time.monotonic() > deadline:
                raise SystemExit(f"{slot} did not get ready:\n{daemon.log()[-3000:]}")
            await anyio.sleep(0.2)

    async def stop_all(self) -> None:
        for slot in list(self.slots):
            await self.stop(slot)

    def undeleted(self) -> int:
        count = 0
        for daemon in self.slots.values():
            for line in daemon.log().splitlines():
                if '"settle_entry_failed"' in line and '"DeleteMessageBatch"' in line:
                    count += 1
        return count


async def _timeline(
    plan: Plan, fleet: Fleet, proxy: FaultProxy, started: float, say: Callable[[str], None]
) -> None:
    async def at(moment: float, step: Callable[[], Awaitable[None]]) -> None:
        await anyio.sleep(max(0.0, started + moment - time.monotonic()))
        await step()

    async def rolling() -> None:
        for slot in [f"r{i}" for i in range(plan.replicas)]:
            await fleet.stop(slot)
            fleet.add(slot)
            await fleet.ready(slot)
        say("rolling restart done")

    async def kill(slot: str) -> None:
        await fleet.kill(slot)
        say(f"SIGKILL {slot}")
        fleet.add(slot)

    async def outage() -> None:
        rule = proxy.add(Rule("dynamodb", None, "error", status=500, code="InternalServerError"))
        say(f"table refusing every call for {plan.outage:g} s")
        await anyio.sleep(plan.outage)
        proxy.rules.remove(rule)
        say("table back")

    async def throttle() -> None:
        rule = proxy.add(
            Rule(
                "lambda",
                "Invoke",
                "error",
                status=429,
                code="TooManyRequestsException",
                path="soak-sync",
                extra={"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"},
            )
        )
        say(f"soak-sync throttling for {plan.throttle:g} s")
        await anyio.sleep(plan.throttle)
        proxy.rules.remove(rule)
        say("soak-sync back")

    async def join() -> None:
        fleet.add(f"r{plan.replicas}")
        say(f"r{plan.replicas} joined")

    async def leave() -> None:
        await fleet.stop("r0")
        del fleet.slots["r0"]
        say("r0 left")

    async with anyio.create_task_group() as tg:
        tg.start_soon(at, plan.rolling_at, rolling)
        tg.start_soon(at, plan.kills_at[0], lambda: kill("r1"))
        tg.start_soon(at, plan.kills_at[1], lambda: kill("r2"))
        tg.start_soon(at, plan.outage_at, outage)
        tg.start_soon(at, plan.throttle_at, throttle)
        tg.start_soon(at, plan.join_at, join)
        tg.start_soon(at, plan.leave_at, leave)


async def soak(
    aws: Any,
    dynamodb: Any,
    proxy: FaultProxy,
    folder: Path,
    plan: Plan,
    say: Callable[[str], None] = print,
) -> Report:
    """The whole soak against an emulator (`aws.sqs`, `aws.lambda_` and `dynamodb`: clients
    straight to it, the role created; `proxy` in front of it, for the replicas)."""
    report = Report(plan)
    urls = await _setup(aws, dynamodb)
    await _seed(aws, urls, plan.messages)
    proxy.keep_journal = True
    proxy.clear()
    fleet = Fleet(folder, _config(proxy.url, plan), report)
    started = time.monotonic()

    def note(text: str) -> None:
        line = f"{time.monotonic() - started:6.1f} s  {text}"
        report.events.append(line)
        say(line)

    try:
        for i in range(plan.replicas):
            fleet.add(f"r{i}")
        for i in range(plan.replicas):
            await fleet.ready(f"r{i}")
        note(f"{plan.replicas} replicas ready")
        dlqs = [urls[q] for q in QUEUES]

        async def drained() -> bool:
            return all([await depth(aws.sqs, u) == 0 for u in dlqs])

        async with anyio.create_task_group() as tg:
            tg.start_soon(_timeline, plan, fleet, proxy, started, note)
            deadline = started + plan.deadline
            while time.monotonic() < deadline:
                if time.monotonic() - started > plan.leave_at + 1 and await drained():
                    report.drained = time.monotonic() - started
                    break
                await anyio.sleep(0.5)
            tg.cancel_scope.cancel()
        note("drained" if report.drained else "deadline passed")
    finally:
        report.undeleted = fleet.undeleted()
        await fleet.stop_all()
    await _account(aws, proxy, urls, plan, report, started)
    return report


async def _account(
    aws: Any, proxy: FaultProxy, urls: dict[str, str], plan: Plan, report: Report, started: float
) -> None:
    per_queue = plan.messages // len(QUEUES)
    seen: dict[str, Counter[int]] = {q: Counter() for q in QUEUES}
    for body in proxy.accepted_requests("lambda", "Invoke"):
        seen[body["q"]][body["n"]] += 1
    for queue, url in (("sqs", urls["out"]), ("fifo", urls["out.fifo"])):
        for read in await drain(aws.sqs, url, delete=True):
            message = json.loads(read["Body"])
            seen[queue][message["n"]] += 1
    report.parked = await depth(aws.sqs, urls["parked"])
    # Lost: delivered nowhere (what is still in a DLQ after the deadline counts: it is stuck).
    report.lost = sum(1 for q in QUEUES for n in range(per_queue) if not seen[q][n])
    report.twice = Counter({q: sum(c - 1 for c in seen[q].values() if c > 1) for q in QUEUES})
    report.bound = sum(report.in_flight_at_kills) + report.undeleted
    for function, (rate, burst) in zip(("soak-sync", "soak-async"), plan.budgets, strict=True):
        times = proxy.times("lambda", "Invoke", path=function)
        worst, at = busiest_window(times, WINDOW)
        report.windows[function] = (worst, at - started, int(rate * WINDOW + burst))


class Aws:
    """Clients straight to the emulator (seeding and counting do not pass the proxy)."""

    def __init__(self, sqs: Any, lambda_: Any) -> None:
        self.sqs = sqs
        self.lambda_ = lambda_


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=Plan.messages)
    parser.add_argument("--folder", type=Path, default=Path("soak-logs"))
    args = parser.parse_args()
    plan = Plan(messages=args.messages)
    os.environ.update({k: v for k, v in ENV.items() if k.startswith("AWS_")})
    server = MotoServer().start()
    proxy = FaultProxy(server.url, seed=5).start()
    session = get_session()

    def client(service: str) -> Any:
        return session.create_client(service, region_name="us-east-1", endpoint_url=server.url)

    try:
        async with (
            client("sqs") as sqs,
            client("lambda") as lambda_,
            client("iam") as iam,
            client("dynamodb") as dynamodb,
        ):
            await create_role(iam)
            report = await soak(Aws(sqs, lambda_), dynamodb, proxy, args.folder, plan)
    finally:
        proxy.stop()
        server.stop()
    print(f"\nsoak of {time.strftime('%Y-%m-%d')}:\n{report.text()}")
    return 1 if report.broken() else 0


if __name__ == "__main__":
    sys.exit(anyio.run(main))
