"""Breakers shared through the coordination table (the breaker half of the coordinator).

A replica publishes its own transitions (open until, trip count; close) at once, adopts what
others published once per generation, and in half-open lets only the holder of the probe
lease probe: the lease is a conditional write, renewed every heartbeat while probing and free
again once its holder has gone quiet for 3 heartbeats. When the table fails, every half-open
breaker probes on its own (LOCAL), as one process would — one waiting on another replica's
probes too, since that replica may be gone and nothing can be learnt meanwhile — until the
table answers again; then the fleet decides who probes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import structlog

from worker.aws.errors import error_code
from worker.core.breaker import State
from worker.core.membership import BreakerNote
from worker.fleet.table import CONDITION_FAILED, CoordinationTable
from worker.targets.guard import Guard

log = structlog.get_logger("worker.fleet.breakers")

MINE, OTHERS, LOCAL = "mine", "others", "local"  # who probes a half-open breaker


class SharedBreakers:
    def __init__(
        self,
        table: CoordinationTable,
        me: str,
        guards: Mapping[str, Guard],
        lease_seconds: float,
        failed: Callable[[str, Exception], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._table = table
        self.me = me
        self._guards = guards
        self._lease_seconds = lease_seconds
        self._failed = failed
        self._clock, self._wall = clock, wall
        self._pending: dict[str, Guard] = {}  # own transitions to publish
        self._leases: dict[str, str] = {}  # target key -> MINE | OTHERS | LOCAL
        self._lease_wanted: set[str] = set()
        self._applied: dict[str, int] = {}  # target key -> generation applied
        self.degraded = False  # the table is failing: every breaker probes on its own

    def may_probe(self, key: str) -> bool:
        return self.degraded or self._leases.get(key) in (MINE, LOCAL)

    def degrade(self) -> None:
        """The table fails: probe locally, whoever held a lease (`may_probe`)."""
        if self.degraded:
            return
        self.degraded = True
        for guard in self._guards.values():
            guard.wake()

    def changed(self, guard: Guard, state: State) -> None:
        """A transition of this replica's own breaker (not an adopted one)."""
        self._leases.pop(guard.key, None)  # a new cycle: nobody's lease yet
        if state is State.HALF_OPEN:
            self._lease_wanted.add(guard.key)
        else:
            self._pending[guard.key] = guard

    def recovered(self) -> None:
        """The table answers again: ask the fleet again who probes."""
        self.degraded = False
        for key, holder in list(self._leases.items()):
            if holder == LOCAL:
                del self._leases[key]
                self._lease_wanted.add(key)
        for key, guard in self._guards.items():
            if guard.breaker.state is State.HALF_OPEN and key not in self._leases:
                self._lease_wanted.add(key)

    def apply(self, breakers: Mapping[str, BreakerNote]) -> None:
        """Adopt what other replicas published, once per generation."""
        now_wall, now = self._wall(), self._clock()
        for key, note in breakers.items():
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
        """Publish this replica's own transitions (one that fails stays pending, and the others
        are tried all the same), then ask for the leases wanted."""
        for key, guard in list(self._pending.items()):
            breaker = guard.breaker
            until = None
            if breaker.state is State.OPEN:
                until = self._wall() + breaker.seconds_until_half_open()
            elif breaker.state is State.HALF_OPEN:
                del self._pending[key]  # the open ended before it was published: nothing to say
                continue
            try:
                generation = await self._table.publish(
                    key, self.me, open_until=until, trips=breaker.trips
                )
            except Exception as exc:  # noqa: BLE001 - kept pending until the table answers
                if error_code(exc) != CONDITION_FAILED:
                    self._failed("PublishBreaker", exc)
                    continue
                # another replica holds the lease, or published a longer open: its note
                # is applied on the next heartbeat
                generation = 0
            del self._pending[key]
            self._applied[key] = max(generation, self._applied.get(key, 0))
            event = "circuit_published" if generation else "circuit_publish_superseded"
            log.info(event, target=guard.name, open=until is not None)
        for key in list(self._lease_wanted):
            self._lease_wanted.discard(key)
            guard = self._guards[key]
            if guard.breaker.state is State.HALF_OPEN:
                await self._take_lease(guard)

    async def _take_lease(self, guard: Guard) -> None:
        try:
            mine = await self._table.lease(guard.key, self.me, self._lease_seconds)
        except Exception as exc:  # noqa: BLE001 - probe on our own, as one process would
            self._failed("ProbeLease", exc)
            self._leases[guard.key] = LOCAL
        else:
            holder = MINE if mine else OTHERS
            if self._leases.get(guard.key) != holder:  # renewals are not news
                log.info("probe_lease", target=guard.name, holder=holder)
            self._leases[guard.key] = holder
        guard.wake()

    async def renew_leases(self) -> None:
        """Every heartbeat: keep the leases of the breakers this replica is probing."""
        for key, holder in list(self._leases.items()):
            guard = self._guards[key]
            if holder == MINE and guard.breaker.state is State.HALF_OPEN:
                await self._take_lease(guard)
