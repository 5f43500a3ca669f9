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
from worker.aws.table import CoordinationTable, FleetView
from worker.core.breaker import State
from worker.core.fleet import MISSED_BEATS, BreakerNote, Membership, share_of
from worker.guard import Guard
from worker.metrics import Metrics
from worker.settings import CoordinationSettings

log = structlog.get_logger("worker.fleet")

MINE, OTHERS, LOCAL = "mine", "others", "local"  # who probes a half-open breaker
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
        self.share = share_of(self.members)
        self.degraded: str | None = None  # the last error while the table is failing
        self._pending: dict[str, Guard] = {}  # own transitions to publish
        self._leases: dict[str, str] = {}  # target key -> MINE | OTHERS | LOCAL
        self._lease_wanted: set[str] = set()
        self._applied: dict[str, int] = {}  # target key -> generation applied
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

    def attach(self, guard: Guard) -> None:
        guard.fleet = self
        guard.set_share(self.share)

    def may_probe(self, key: str) -> bool:
        return self._leases.get(key) in (MINE, LOCAL)

    def changed(self, guard: Guard, state: State) -> None:
        self._leases.pop(guard.key, None)  # a new cycle: nobody's lease yet
        if state is State.HALF_OPEN:
            self._lease_wanted.add(guard.key)
        else:
            self._pending[guard.key] = guard
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
        with anyio.move_on_after(max(self._hb, 5.0)):
            await self.heartbeat()
        if self.degraded is None and self.members > 1:
            log.info("coordination_joining", members=self.members, wait_seconds=self._hb)
            await anyio.sleep(self._hb * JOIN_WAIT_BEATS)
            with anyio.move_on_after(max(self._hb, 5.0)):
                await self.heartbeat()

    async def run(self) -> None:
        due = self._clock() + self._hb
        while True:
            with anyio.move_on_after(max(0.0, due - self._clock())):
                await self._kick.wait()
            self._kick = anyio.Event()
            await self.flush()
            if self._clock() >= due:
                await self.heartbeat()
                due = max(due + self._hb, self._clock())

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
        try:
            await self.table.beat(self.me, self._hb)
            view = await self.table.read()
        except Exception as exc:  # noqa: BLE001 - degraded, not down
            self.failed("Heartbeat", exc)
            return
        self._recovered()
        self._set_members(self._membership.observe(view.counters))
        self._apply(view)
        await self.flush()
        await self._renew_leases()

    def _set_members(self, live: list[str]) -> None:
        if len(live) != self.members:
            log.info("coordination_members", members=len(live), was=self.members)
        self.members = len(live)
        self.share = share_of(self.members)
        self._metrics.coordination_members.set(self.members)
        for guard in self._guards.values():
            guard.set_share(self.share)

    def _apply(self, view: FleetView) -> None:
        now_wall, now = self._wall(), self._clock()
        for key, note in view.breakers.items():
            guard = self._guards.get(key)
            if guard is None or key in self._pending:
                continue  # not ours, or our own newer transition is on its way
            if note.generation > self._applied.get(key, 0):
                self._applied[key] = note.generation
                self._adopt(guard, note, now + (note.open_until - now_wall), now)
            self._want_free_lease(guard, note, now_wall)

    @staticmethod
    def _adopt(guard: Guard, note: BreakerNote, until: float, now: float) -> None:
        if not note.is_open:
            guard.adopt(None)
        elif until > now or guard.breaker.state is State.CLOSED:
            # an open that has already ended still puts a closed breaker in half-open,
            # where the probe lease decides who probes
            guard.adopt(until, note.trips)

    def _want_free_lease(self, guard: Guard, note: BreakerNote, now_wall: float) -> None:
        """A half-open breaker whose prober has gone quiet: ask again."""
        waiting = guard.breaker.state is State.HALF_OPEN and self._leases.get(guard.key) == OTHERS
        if waiting and note.lease_free(now_wall):
            self._lease_wanted.add(guard.key)

    async def flush(self) -> None:
        while self._pending:
            key, guard = next(iter(self._pending.items()))
            breaker = guard.breaker
            until = None
            if breaker.state is State.OPEN:
                until = self._wall() + breaker.seconds_until_half_open()
            elif breaker.state is State.HALF_OPEN:
                del self._pending[key]  # the open ended before it was published: nothing to say
                continue
            try:
                generation = await self.table.publish(
                    key, self.me, open_until=until, trips=breaker.trips
                )
            except Exception as exc:  # noqa: BLE001 - kept pending until the table answers
                if error_code(exc) != "ConditionalCheckFailedException":
                    self.failed("PublishBreaker", exc)
                    return
                # another replica holds the lease, or published a longer open: its note
                # is applied on the next heartbeat
                generation = self._applied.get(key, 0)
            del self._pending[key]
            self._applied[key] = max(generation, self._applied.get(key, 0))
            log.info("circuit_published", target=guard.name, open=until is not None)
        for key in list(self._lease_wanted):
            self._lease_wanted.discard(key)
            guard = self._guards[key]
            if guard.breaker.state is State.HALF_OPEN:
                await self._take_lease(guard)

    async def _take_lease(self, guard: Guard) -> None:
        try:
            mine = await self.table.lease(guard.key, self.me, MISSED_BEATS * self._hb)
        except Exception as exc:  # noqa: BLE001 - probe on our own, as one process would
            self.failed("ProbeLease", exc)
            self._leases[guard.key] = LOCAL
        else:
            holder = MINE if mine else OTHERS
            if self._leases.get(guard.key) != holder:  # renewals are not news
                log.info("probe_lease", target=guard.name, holder=holder)
            self._leases[guard.key] = holder
        guard.wake()

    async def _renew_leases(self) -> None:
        for key, holder in list(self._leases.items()):
            guard = self._guards[key]
            if holder == MINE and guard.breaker.state is State.HALF_OPEN:
                await self._take_lease(guard)

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

    def _recovered(self) -> None:
        if self.degraded is not None:
            log.info("coordination_recovered", members=self.members)
        self.degraded = None
        self._metrics.coordination_degraded.set(0)
        for key, holder in list(self._leases.items()):
            if holder == LOCAL:  # ask the fleet again who probes
                del self._leases[key]
                self._lease_wanted.add(key)


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
