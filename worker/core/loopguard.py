"""Loop guard for hand-off targets (pure; the clock is a parameter).

A hand-off target (Lambda `Event`, Step Functions without waiting, SNS, EventBridge) accepts
the message and fails later on its own; its failure path sends the payload back as a *new* DLQ
message with fresh counters. The guard counts the distinct DLQ messages that carried the same
(target, payload) within a window; once that reaches `max_attempts`, the payload is looping.

Bounded (oldest fingerprints are dropped first) and expiring. The count lives in one process
(`LocalLoops`); with coordination every replica counts the same payload in the table
(`worker.fleet.loops.SharedLoops`): the pipeline sees either through the `Loops` protocol.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

MAX_FINGERPRINTS = 50_000
MAX_IDS_PER_FINGERPRINT = 64
WINDOW_SECONDS = 24 * 3600.0


def fingerprint(target: str, payload: str) -> str:
    return hashlib.sha256(f"{target}\n{payload}".encode()).hexdigest()


class LoopGuard:
    def __init__(
        self,
        clock: Callable[[], float],
        *,
        window_seconds: float = WINDOW_SECONDS,
        max_fingerprints: int = MAX_FINGERPRINTS,
    ) -> None:
        self._clock = clock
        self._window = window_seconds
        self._max = max_fingerprints
        # fingerprint -> (first seen, message ids seen), in first-seen order: a fingerprint
        # keeps its place when seen again, so the head is always the next to expire.
        self._seen: OrderedDict[str, tuple[float, list[str]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def observe(self, key: str, message_id: str) -> int:
        """Record a delivery of `key` by this DLQ message; returns how many distinct DLQ
        messages carried it within the window (this one included)."""
        now = self._clock()
        self._expire(now)
        first, ids = self._seen.get(key, (now, []))
        if message_id not in ids:
            ids = [*ids, message_id][-MAX_IDS_PER_FINGERPRINT:]
        self._seen[key] = (first, ids)  # an existing key keeps its first-seen place
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return len(ids)

    def _expire(self, now: float) -> None:
        while self._seen:
            key, (first, _) = next(iter(self._seen.items()))
            if now - first < self._window:
                return
            del self._seen[key]


class Loops(Protocol):
    """How the pipeline counts a hand-off target's payloads (locally, or fleet-wide)."""

    async def counts(self, seen: Sequence[tuple[str, str]]) -> list[int]:
        """For each (fingerprint, DLQ message id): how many distinct DLQ messages carried
        that fingerprint within the window, this one included."""
        ...


class LocalLoops:
    """This process's own count."""

    def __init__(self, guard: LoopGuard) -> None:
        self.guard = guard

    async def counts(self, seen: Sequence[tuple[str, str]]) -> list[int]:
        return [self.guard.observe(key, mid) for key, mid in seen]
