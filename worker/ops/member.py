"""An operator command as a member of the fleet while it runs (`parked replay --to target`):
it takes its share of the target's budget and honours the breaker the daemons published."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import anyio

from worker.aws.clients import Clients
from worker.fleet import Coordinator
from worker.guard import Guard
from worker.metrics import Metrics
from worker.settings import CoordinationSettings


@asynccontextmanager
async def membership(
    settings: CoordinationSettings,
    clients: Clients,
    guards: Mapping[str, Guard],
    metrics: Metrics,
) -> AsyncIterator[Coordinator | None]:
    """Take part in the fleet while the block runs (an operator's replay to a target: it
    takes its share of the target's budget and honours the fleet's breaker); None without
    coordination."""
    if settings.backend != "dynamodb":
        yield None
        return
    fleet = await Coordinator.open(settings, clients, guards, metrics)
    for guard in guards.values():
        fleet.attach(guard)
    await fleet.start()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(fleet.run)
            yield fleet
            tg.cancel_scope.cancel()
    finally:
        await fleet.leave()
