"""Loop guard for hand-off targets (pure; the clock is a parameter).

A hand-off target (Lambda `Event`, Step Functions without waiting, SNS, EventBridge) accepts
the message and fails later on its own; its failure path sends the payload back as a *new* DLQ
message with fresh counters. The guard counts the distinct DLQ messages that carried the same
(target, payload) within a window; once that reaches `max_attempts`, the payload is looping.

Bounded (oldest fingerprints are dropped first) and expiring. The count lives in one process:
with several replicas each counts what it sees, so a loop is caught within
`max_attempts * replicas` cycles at worst.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

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
