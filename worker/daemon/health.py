"""What the health endpoints judge (`http.py` serves it): liveness from the queue loops'
beats, readiness from their last receives, and notes on what is degraded without failing.
The composition root and discovery fill it in."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.dlq.poller import Poller

LIVENESS_STALE_SECONDS = 120.0  # a queue loop beats at least every ~20 s (long poll)


@dataclass
class Health:
    """What the endpoints look at; the composition root fills it in."""

    queues: list[str]
    pollers: dict[str, Poller] = field(default_factory=dict)
    stopping: bool = False
    clock: Callable[[], float] = time.monotonic
    sources: list[Callable[[], list[str]]] = field(default_factory=list)  # more notes
    # queue -> why it has not started yet (what cannot be resolved), until it has
    unresolved: dict[str, str] = field(default_factory=dict)

    def liveness(self) -> list[tuple[str, bool]]:
        now = self.clock()
        return [
            (f"queue {name} loop", now - p.last_progress < LIVENESS_STALE_SECONDS)
            for name, p in self.pollers.items()
        ]

    def readiness(self) -> list[tuple[str, bool]]:
        checks = [("configuration loaded", True), ("not shutting down", not self.stopping)]
        for name in self.queues:
            poller = self.pollers.get(name)
            checks.append((f"queue {name} resolved", poller is not None))
            ok = poller is not None and poller.last_receive_ok is True
            checks.append((f"queue {name} last receive succeeded", ok))
        return checks

    def notes(self) -> list[str]:
        """Degraded but serving: shown with `?verbose`, never a failed check."""
        notes = [f"queue {name}: {why}" for name, why in sorted(self.unresolved.items())]
        notes += [f"queue {name}: {note}" for name, p in self.pollers.items() for note in p.notes()]
        return notes + [note for source in self.sources for note in source()]
