"""The fleet as one replica sees it (pure; the clock is a parameter).

Membership: every replica bumps a counter in its heartbeat item every `heartbeat_seconds`; a
member whose counter has not moved for MISSED_BEATS heartbeats of *this* replica's clock is
gone. Judging by the counter, not by the time written in the item, keeps the hosts' clock skew
out of it; an item a replica removed when it stopped is gone at once. A member first seen
counts as live (a stale item of a dead replica is counted until it has missed its beats: the
safe side, a smaller share).

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
        self._seen: dict[str, tuple[int, float]] = {}  # member -> (counter, when it moved)

    def observe(self, counters: Mapping[str, int]) -> list[str]:
        """Take one read of the heartbeat items (member -> counter); returns the live
        members, this replica included, in a stable order."""
        now = self._clock()
        seen: dict[str, tuple[int, float]] = {}
        for member, counter in counters.items():
            before = self._seen.get(member)
            moved = before is None or before[0] != counter
            seen[member] = (counter, now if moved or before is None else before[1])
        self._seen = seen
        limit = MISSED_BEATS * self._heartbeat
        live = {m for m, (_, moved) in seen.items() if now - moved < limit}
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
