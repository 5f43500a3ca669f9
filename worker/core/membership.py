"""The fleet as one replica sees it (pure; the clock is a parameter).

Membership: every replica bumps a counter in its heartbeat item every `heartbeat_seconds`; a
member is gone once its counter has stood still for MISSED_BEATS heartbeats, measured on *this*
replica's clock from the read before the one that last saw it move (its beat came after that
read), less half a heartbeat for the reads' own timing (a read a little late must not push the
verdict a whole heartbeat further): so a replica killed right after a beat is gone within
MISSED_BEATS heartbeats of its death, and a live one must miss two beats in a row to be
counted out. Judging
by the counter, not by the time written in the item, keeps the hosts' clock skew out of it; an
item a replica removed when it stopped is gone at once. A member first seen counts as live (a
stale item of a dead replica is counted until it has missed its beats: the safe side, a
smaller share).

A published breaker (`BreakerNote`) carries a generation that grows with each publication; a
replica applies a note once, in generation order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

MISSED_BEATS = 3


class Membership:
    def __init__(self, me: str, heartbeat_seconds: float, clock: Callable[[], float]) -> None:
        self.me = me
        self._heartbeat = heartbeat_seconds
        self._clock = clock
        self._seen: dict[str, tuple[int, float]] = {}  # member -> (counter, moved since)
        self._last_read = clock()
        self._took: list[float] = []

    def observe(self, counters: Mapping[str, int], took: float = 0.0) -> list[str]:
        """Take one read of the heartbeat items (member -> counter); returns the live
        members, this replica included, in a stable order. `took`: how long this replica's
        own beat and read took; a table that answers slowly slows every member's beats
        alike, so the time a member may stand still grows by it (the longest of the last
        MISSED_BEATS), on the safe side: a smaller share a little longer."""
        self._took = [*self._took[-(MISSED_BEATS - 1) :], took]
        now = self._clock()
        seen: dict[str, tuple[int, float]] = {}
        moved_now: set[str] = set()
        for member, counter in counters.items():
            before = self._seen.get(member)
            if before is None:
                seen[member] = (counter, now)
            elif before[0] != counter:
                seen[member] = (counter, self._last_read)
                moved_now.add(member)
            else:
                seen[member] = before
        self._seen = seen
        self._last_read = now
        limit = (MISSED_BEATS - 0.5) * (self._heartbeat + max(self._took))
        # A counter that moved since the last read beat since then: live, however long ago
        # that read was (a replica whose own reads come late, on a loaded host, must not
        # count everybody else out and take the whole budget).
        live = {m for m, (_, moved) in seen.items() if m in moved_now or now - moved < limit}
        live.add(self.me)
        return sorted(live)


def share_of(members: int) -> float:
    return 1.0 / max(1, members)


@dataclass(frozen=True)
class BreakerNote:
    """A target's breaker as published in the table (times on the wall clock)."""

    key: str  # the target's identity
    generation: int
    is_open: bool
    open_until: float = 0.0
    trips: int = 0
    prober: str | None = None
    probe_until: float = 0.0

    def lease_free(self, now: float) -> bool:
        return self.prober is None or self.probe_until < now
