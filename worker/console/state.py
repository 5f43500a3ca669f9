"""The console's state, shared by its handlers: configuration, clients, lock, snapshots, jobs."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from worker.aws.clients import Clients
from worker.console.jobs import Jobs
from worker.console.security import Lock
from worker.console.snapshot import Snapshots
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


CONSOLE = web.AppKey("console", Console)
