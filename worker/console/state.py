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
        """The queue's part of its parking queue's snapshot (`Snapshots.get`), told which
        configured DLQs share that parking queue (by resolved URL, whatever spelling)."""
        dlqs = [ctx.dlq.url]
        for name in self.settings.queues:
            try:  # resolved once per console, as the queue list does
                other = await self.context(name)
            except Exception:  # noqa: BLE001, S112 - a queue that cannot be opened (its own
                continue  # row on the queue list says why) shares nothing
            if other.parking.url == ctx.parking.url and other.dlq.url not in dlqs:
                dlqs.append(other.dlq.url)
        return await self.snapshots.get(ctx, refresh=refresh, dlqs=tuple(dlqs))


CONSOLE = web.AppKey("console", Console)
