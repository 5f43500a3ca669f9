"""Counting loops for hand-off targets in the coordination table, so that every replica
counts the same payload (`SharedLoops`, a `worker.core.loopguard.Loops`).

A shared count falls back to this process's own count while the table fails (the count is
kept locally all along, so the fallback starts from what this replica saw)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio

from worker.core.loopguard import WINDOW_SECONDS, LocalLoops, LoopGuard
from worker.fleet.coordinator import Coordinator
from worker.fleet.table import CoordinationTable


class SharedLoops:
    def __init__(
        self,
        table: CoordinationTable,
        fleet: Coordinator,
        local: LocalLoops | None = None,
        *,
        window_seconds: float = WINDOW_SECONDS,
    ) -> None:
        self._table = table
        self._fleet = fleet
        self._local = local or LocalLoops(LoopGuard(time.monotonic))
        self._window = window_seconds

    async def counts(self, seen: Sequence[tuple[str, str]]) -> list[int]:
        counted = await self._local.counts(seen)
        if self._fleet.degraded is not None:
            return counted  # no per-message wait on a failing table; the heartbeat retries
        shared = list(counted)

        async def count(index: int, key: str, mid: str) -> None:
            try:
                shared[index] = await self._table.count_loop(key, mid, self._window)
            except Exception as exc:  # noqa: BLE001 - this replica's own count stands
                self._fleet.failed("UpdateItem", exc)

        async with anyio.create_task_group() as tg:
            for index, (key, mid) in enumerate(seen):
                tg.start_soon(count, index, key, mid)
        return [max(a, b) for a, b in zip(shared, counted, strict=True)]
