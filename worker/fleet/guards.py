"""Every target of the process with its guard: the one place a target is built with its
bucket, breaker and — when coordinating — the fleet's share. The daemon's queues and
`parked replay --to target` both build their targets here (SPEC.md, Fleet budgets).

One guard per target identity (`target_key`): queues that feed one target share one budget.
The coordinator reads the guards as they are added (discovery starts queues at any time); it
is opened here, before the first guard, so every guard has the fleet from its first call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from worker.aws.clients import Clients
from worker.aws.facts import DlqFacts
from worker.fleet.coordinator import Coordinator
from worker.metrics import Metrics
from worker.settings import CoordinationSettings, QueueSettings, parse_arn
from worker.targets import build_target
from worker.targets.base import Target
from worker.targets.guard import Guard


class Guards(Mapping[str, Guard]):
    """The process's guards by target key (a read-only mapping: the coordinator's view)."""

    def __init__(self, clients: Clients | None, metrics: Metrics) -> None:
        self._clients = clients
        self._metrics = metrics
        self._by_key: dict[str, Guard] = {}
        self.fleet: Coordinator | None = None

    @classmethod
    async def open(
        cls,
        coordination: CoordinationSettings,
        clients: Clients,
        metrics: Metrics,
        *,
        join: bool = True,
    ) -> Guards:
        """With `coordination.backend: dynamodb` and `join`, the guards take the fleet's share
        (the caller takes part with `guards.fleet.taking_part()`); else each has its whole
        rate (a dry run moves nothing)."""
        guards = cls(clients, metrics)
        if join and coordination.backend == "dynamodb":
            guards.fleet = await Coordinator.open(coordination, clients, guards, metrics)
        return guards

    async def target(self, queue: QueueSettings, facts: DlqFacts) -> tuple[Target, Guard]:
        """The queue's target adapter and its guard (shared with every queue of the same
        target identity)."""
        assert self._clients is not None
        target = await build_target(queue, self._clients.of(queue), facts.by_arn)
        return target, self.guard(queue, _label(queue, target.name))

    def guard(self, queue: QueueSettings, target_name: str) -> Guard:
        """`target_name`: the metrics' label (`_label`)."""
        key = queue.target_key
        guard = self._by_key.get(key)
        if guard is None:
            guard = self._by_key[key] = Guard(
                target_name,
                queue.effective_rate_limit,
                queue.effective_circuit_breaker,
                self._metrics,
                key=key,
                fleet=self.fleet,
            )
        return guard

    def __getitem__(self, key: str) -> Guard:
        return self._by_key[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)


def _label(queue: QueueSettings, name: str) -> str:
    """The metric label of a queue's target: its name; for a queue that lives elsewhere, where
    the target is too (the ARN's account and region, or the queue's place for a name), so
    two accounts' `orders` are two series, as they are two breakers."""
    if not queue.place:
        return name
    key = queue.target_key
    if key.startswith(f"{queue.place}/"):
        return f"{queue.place}/{name}"
    arn = parse_arn(key.split(":", 1)[1])
    if arn and arn.account:
        return f"{arn.account}/{arn.region}/{name}"
    return f"{queue.place}/{name}"
