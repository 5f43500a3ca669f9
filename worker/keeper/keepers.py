"""One keeper per distinct parking queue of the process, started as each is resolved (two
references to one queue — a name and a URL — keep it once)."""

from __future__ import annotations

from collections.abc import Callable

from anyio.abc import TaskGroup

from worker.aws.sqs import SqsQueue
from worker.keeper.keeper import Keeper, Lease
from worker.metrics import Metrics
from worker.settings import KeeperSettings


class Keepers:
    def __init__(
        self,
        settings: KeeperSettings,
        metrics: Metrics,
        tasks: TaskGroup,
        *,
        lease_for: Callable[[str], Lease] | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._tasks = tasks
        self._lease_for = lease_for  # with coordination: the table's lease for a queue URL
        self.keeping: dict[str, Keeper] = {}

    def start(self, queue: SqsQueue) -> None:
        if not self._settings.enabled or queue.url in self.keeping:
            return
        lease = self._lease_for(queue.url) if self._lease_for is not None else None
        keeper = self.keeping[queue.url] = Keeper(queue, self._settings, self._metrics, lease=lease)
        self._tasks.start_soon(keeper.run)
