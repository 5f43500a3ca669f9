"""Coordination between the replicas of one deployment (SPEC.md, Coordination).

One task per process, one request at a time, in order:
- at start: one heartbeat (and, joining a running fleet, one more after a heartbeat's wait,
  so the others already take their smaller share when this one starts delivering);
- every `heartbeat_seconds`: bump this replica's heartbeat item and read the fleet partition
  (members and published breakers); the live members set every guard's share; breakers other
  replicas published are adopted; probe leases this replica holds are renewed;
- at once, between heartbeats: publish this replica's own breaker transitions (open, close)
  and ask for the probe lease of a breaker that went half-open.

The table failing is not the retries failing: the replica keeps its last known share (before
the first answer, 1 / `members_when_unknown`), keeps serving, probes on its own (as one
process would), counts the failure and says so in `/readyz?verbose` and
`retry_worker_coordination_degraded`; the next heartbeat that succeeds recovers.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import anyio
import structlog

from worker.aws.clients import Clients
from worker.aws.errors import error_code, metric_code
from worker.core.breaker import State
from worker.core.membership import MISSED_BEATS, Membership, share_of
from worker.fleet.breakers import SharedBreakers
from worker.fleet.table import CoordinationTable
from worker.metrics import Metrics
from worker.settings import CoordinationSettings
from worker.targets.guard import Guard

log = structlog.get_logger("worker.fleet.coordinator")

JOIN_WAIT_BEATS = 1.2  # a heartbeat, and a little for the others' reads to come back


def replica_id() -> str:
    """Pod or task host name, process, and a random suffix (a restarted pod is a new member)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Coordinator:
    def __init__(
        self,
        settings: CoordinationSettings,
        table: CoordinationTable,
        guards: Mapping[str, Guard],
        metrics: Metrics,
        *,
        me: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.me = me or replica_id()
        self._hb = settings.heartbeat_seconds
        self.table = table
        self._guards = guards  # by target key; the process adds to it as queues start
        self._metrics = metrics
        self._clock, self._wall = clock, wall
        self._membership = Membership(self.me, self._hb, clock)
        self.members = settings.members_when_unknown
        self.degraded: str | None = None  # the last error while the table is failing
        self.breakers = SharedBreakers(
            table, self.me, guards, MISSED_BEATS * self._hb, self.failed, clock=clock, wall=wall
        )
        self._kick = anyio.Event()
        metrics.coordination_members.set(self.members)
        metrics.coordination_degraded.set(0)

    @classmethod
    async def open(
        cls,
        settings: CoordinationSettings,
        clients: Clients,
        guards: Mapping[str, Guard],
        metrics: Metrics,
    ) -> Coordinator:
        assert settings.table is not None  # validated: required for dynamodb
        table = CoordinationTable(await clients.get("dynamodb"), settings.table)
        return cls(settings, table, guards, metrics)

    # -- what guards call (Fleet protocol) ----------------------------------------------------

    def may_probe(self, key: str) -> bool:
        return self.breakers.may_probe(key)

    def changed(self, guard: Guard, state: State) -> None:
        self.breakers.changed(guard, state)
        self._kick.set()

    def notes(self) -> list[str]:
        if self.degraded is None:
            return []
        return [f"coordination degraded ({self.degraded}): keeping a share of 1/{self.members}"]

    # -- the task ------------------------------------------------------------------------------

    async def start(self) -> None:
        """The first heartbeat, before any queue delivers (bounded: an unreachable table
        must not hold the daemon back). Joining a running fleet, wait one more heartbeat
        before delivering: by then every member has read this one's beat and taken its
        smaller share, so a joining replica never puts the fleet over its budget."""
        await self._bounded_heartbeat()
        if self.degraded is None and self.members > 1:
            log.info("coordination_joining", members=self.members, wait_seconds=self._hb)
            await anyio.sleep(self._hb * JOIN_WAIT_BEATS)
            await self._bounded_heartbeat()

    async def _bounded_heartbeat(self) -> None:
        with anyio.move_on_after(max(self._hb, 5.0)) as scope:
            await self.heartbeat()
        if scope.cancelled_caught:
            self.failed("Heartbeat", TimeoutError("the coordination table did not answer"))

    async def run(self) -> None:
        due = self._clock() + self._hb
        while True:
            with anyio.move_on_after(max(0.0, due - self._clock())):
                await self._kick.wait()
            self._kick = anyio.Event()
            await self.breakers.flush()
            if self._clock() >= due:
                await self.heartbeat()
                due = max(due + self._hb, self._clock())

    @asynccontextmanager
    async def taking_part(self) -> AsyncIterator[None]:
        """A member of the fleet while the block runs: joins (`start`), beats in the
        background, and leaves at the end, however the block ends."""
        try:
            await self.start()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.run)
                yield
                tg.cancel_scope.cancel()
        finally:
            await self.leave()

    async def leave(self) -> None:
        """Remove this replica's heartbeat: the others take its share at once."""
        with anyio.move_on_after(2.0, shield=True):
            try:
                await self.table.leave(self.me)
                log.info("coordination_left", replica=self.me)
            except Exception as exc:  # noqa: BLE001 - the item expires anyway
                self.failed("DeleteItem", exc)

    # -- steps ---------------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        started = self._clock()
        try:
            await self.table.beat(self.me, self._hb)
            view = await self.table.read()
        except Exception as exc:  # noqa: BLE001 - degraded, not down
            self.failed("Heartbeat", exc)
            return
        self._recovered()
        took = self._clock() - started
        self._set_members(self._membership.observe(view.counters, took))
        self.breakers.apply(view.breakers)
        await self.breakers.flush()
        await self.breakers.renew_leases()

    async def flush(self) -> None:
        """Publish this replica's own transitions and ask for wanted leases, now."""
        await self.breakers.flush()

    @property
    def share(self) -> float:
        """This replica's part of every target's budget."""
        return share_of(self.members)

    def _set_members(self, live: list[str]) -> None:
        if len(live) == self.members:
            return  # guards attached since took the share then
        log.info("coordination_members", members=len(live), was=self.members)
        self.members = len(live)
        self._metrics.coordination_members.set(self.members)
        for guard in self._guards.values():
            guard.set_share(self.share)

    # -- degraded ------------------------------------------------------------------------------

    def failed(self, operation: str, exc: Exception) -> None:
        code = error_code(exc)
        self._metrics.aws_errors.labels("dynamodb", operation, metric_code(code)).inc()
        if self.degraded is None:
            log.warning(
                "coordination_degraded",
                operation=operation,
                error=code,
                members=self.members,
                share=round(self.share, 4),
            )
        self.degraded = code
        self._metrics.coordination_degraded.set(1)
        self.breakers.degrade()

    def _recovered(self) -> None:
        if self.degraded is not None:
            log.info("coordination_recovered", members=self.members)
        self.degraded = None
        self._metrics.coordination_degraded.set(0)
        self.breakers.recovered()
