"""The console's state, shared by its handlers: configuration, clients, lock, snapshots, jobs."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from worker.aws.clients import Clients
from worker.console.jobs import Jobs
from worker.console.security import Lock
from worker.console.snapshot import Snapshot, Snapshots
from worker.ops.context import QueueContext, open_queue
from worker.settings import Settings


@dataclass
class Console:
    settings: Settings
    clients: Clients
    lock: Lock
    snapshots: Snapshots
    jobs: Jobs
    contexts: dict[str, QueueContext] = field(default_factory=dict)

    async def context(self, name: str) -> QueueContext:
        if name not in self.contexts:
            self.contexts[name] = await open_queue(self.settings, name, self.clients)
        return self.contexts[name]

    async def snapshot(self, ctx: QueueContext, *, refresh: bool = False) -> Snapshot:
        """The queue's part of its parking queue's snapshot (`Snapshots.get`), told how many
        configured queues share that parking queue."""
        parking = ctx.settings.policy.parking_queue
        sharing = sum(q.policy.parking_queue == parking for q in self.settings.queues.values())
        return await self.snapshots.get(ctx, refresh=refresh, sharing=sharing)


CONSOLE = web.AppKey("console", Console)
