"""Building one queue's poller from its settings — part of the composition root (`app.py`
owns the task tree and uses this). What the queues of one process share lives in `Shared`.

Start-up costs one call per queue at most: the DLQ's URL (none when the configuration or
discovery gives it); a parking queue is resolved once however many queues park into it; the
redrive sources and the retention period are read with the first batch (an idle queue never
pays for them).
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from worker.aws.clients import Clients
from worker.aws.errors import error_code
from worker.aws.facts import DlqFacts
from worker.aws.sqs import QUEUE_GONE_CODES, SqsQueue, resolve_queue_url
from worker.core.idle import IdleSchedule
from worker.core.loopguard import LocalLoops, LoopGuard, Loops
from worker.core.notices import Notices
from worker.decisions.decider import Decider
from worker.dlq.pause import PauseWatch
from worker.dlq.pipeline import Pipeline
from worker.dlq.poller import Poller
from worker.dlq.settle import Settler
from worker.dlq.watch import QueueWatch
from worker.fleet.coordinator import Coordinator
from worker.fleet.guards import Guards
from worker.keeper.keeper import Lease
from worker.metrics import Metrics
from worker.settings import QueueSettings, Settings

log = structlog.get_logger("worker.daemon.assembly")


class Unresolved(Exception):
    """A queue this one needs cannot be found: which, and AWS's code (`code`)."""

    def __init__(self, what: str, ref: str, code: str) -> None:
        missing = code in QUEUE_GONE_CODES
        super().__init__(f"its {what} {ref} " + ("does not exist" if missing else f"({code})"))
        self.code, self.missing = code, missing


async def resolved(sqs: Any, ref: str, what: str) -> str:
    """The queue's URL (a name costs one GetQueueUrl; a URL given as such costs nothing, and
    a wrong one shows in its receives: the poller says so)."""
    try:
        return await resolve_queue_url(sqs, ref)
    except Exception as exc:
        raise Unresolved(what, ref, error_code(exc)) from exc


def _local_loops() -> Loops:
    return LocalLoops(LoopGuard(time.monotonic))


@dataclass
class Shared:
    """Shared by every queue of the process; built once, before any queue starts."""

    guards: Guards  # every target's guard, one per target identity, with the fleet's share
    loops: Loops = field(default_factory=_local_loops)  # local, or the fleet's shared count
    polls: anyio.CapacityLimiter | None = None  # poll slots: the descriptor budget
    parking: dict[str, SqsQueue] = field(default_factory=dict)  # resolved once, by reference
    # one random source for every queue's jitter (a Random holds 2.5 kB of state)
    rng: random.Random = field(default_factory=random.Random)
    # told of each parking queue once it is resolved (the keeper starts keeping it)
    on_parking: Callable[[SqsQueue], None] | None = None
    # told of what is parked and what arrives (`notify:`), without waiting
    notices: Notices | None = None
    # one lock per parking queue: one account slow to assume never holds up another's
    _locks: dict[str, anyio.Lock] = field(default_factory=lambda: defaultdict(anyio.Lock))

    async def parking_queue(self, clients: Clients, ref: str) -> SqsQueue:
        """Resolved once per place (a name is another queue in another account or region)."""
        key = f"{clients.where}:{ref}"
        async with self._locks[key]:  # queues start concurrently: resolve each one once
            if key not in self.parking:
                sqs = await clients.get("sqs")
                url = await resolved(sqs, ref, "parking queue")
                name = url.rstrip("/").rsplit("/", 1)[-1]
                label = f"{clients.where}/{name}" if clients.where else name
                self.parking[key] = SqsQueue(sqs, url, label=label)
                if self.on_parking is not None:
                    self.on_parking(self.parking[key])
            return self.parking[key]


async def build_poller(
    name: str,
    queue: QueueSettings,
    settings: Settings,
    clients: Clients,
    metrics: Metrics,
    shared: Shared,
    *,
    stop_when_gone: bool = False,
) -> Poller:
    """`stop_when_gone`: a discovered queue, whose deletion ends its poller. Everything
    resolves where the queue lives (its account and region)."""
    clients = clients.of(queue)
    sqs = await clients.get("sqs")
    # The parking queue first: its keeper starts even while the DLQ cannot be resolved.
    parking = await shared.parking_queue(clients, queue.policy.parking_queue or "")
    dlq = SqsQueue(sqs, await resolved(sqs, queue.queue_ref, "DLQ"))
    facts = DlqFacts(sqs, dlq.url)  # learned with the first batch
    target, guard = await shared.guards.target(queue, facts)
    decider = await Decider.build(
        name, queue, clients, metrics, log_bodies=settings.logging.log_bodies
    )
    pipeline = Pipeline(
        queue.policy,
        target,
        guard,
        facts,
        rng=shared.rng,
        loops=shared.loops,
        loop_key=queue.target_key,
        fifo=dlq.is_fifo,
        decider=decider,
        queue=name,
        notices=shared.notices,
    )
    settler = Settler(
        name,
        dlq,
        parking,
        metrics,
        target=target,
        log_bodies=settings.logging.log_bodies,
        notices=shared.notices,
    )
    watch = QueueWatch(
        name,
        dlq,
        metrics,
        IdleSchedule(queue.receive.idle_max_interval_seconds, shared.rng),
        pause=PauseWatch(sqs, dlq.url),
        depth_interval=settings.metrics.queue_depth_interval_seconds,
    )
    log.info("queue_ready", queue=name, url=dlq.url, target=target.name, parking=parking.url)
    return Poller(
        name,
        queue,
        dlq,
        guard=guard,
        facts=facts,
        pipeline=pipeline,
        settler=settler,
        metrics=metrics,
        watch=watch,
        polls=shared.polls,
        stop_when_gone=stop_when_gone,
        rng=shared.rng,
    )


def keeper_lease(settings: Settings, fleet: Coordinator | None) -> Callable[[str], Lease] | None:
    """With coordination, one replica at a time keeps a parking queue (the table's lease)."""
    if fleet is None:
        return None

    class TableLease:
        def __init__(self, url: str) -> None:
            self.url = url

        async def take(self, seconds: float) -> bool:
            assert fleet is not None
            return await fleet.table.keeper_lease(self.url, fleet.me, seconds)

        async def give_up(self) -> None:
            assert fleet is not None
            await fleet.table.keeper_give_up(self.url, fleet.me)

    return TableLease
