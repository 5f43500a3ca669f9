"""What a queue's page shows: a bounded snapshot of its parked messages.

SQS has no way to look at a queue but to receive it, and a received message is invisible to
everyone else (the command line, another page) until it is released. So a page never reads
the parking queue itself: one read per *parking queue* (several DLQs may share one: each page
shows its own queue's part) runs in the background, holds what it read `HOLD_SECONDS` at a
time (the most it stays invisible if the console dies mid-read) and releases everything at
its end. It reads as many messages as the queue held when it began (no empty long polls
to wait out; what arrives meanwhile shows on a refresh), keeps `MAX_MESSAGES` messages of
each DLQ and stops once every DLQ sharing the parking queue has that many, at `MAX_BYTES` of
bodies or after `MAX_READ` messages (a page of a 100,000-message queue shows the first 10,000
read, and says so); an action never acts on the snapshot but reads the queue again, exactly
by the filter (`jobs`). A page waits at most `FIRST_WAIT_SECONDS` for the read and then shows
what it has, marked as still reading; the snapshot's age is on the page with a refresh. The
console's actions and reads of one parking queue take turns (`QueueLocks`, by parking queue:
a read for one DLQ holds the messages of every DLQ that shares it), so the console never
hides messages from itself.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, defaultdict
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from worker.aws.attributes import read_depth
from worker.aws.errors import said
from worker.core.parking import ParkedView, error_type_of
from worker.ops.context import QueueContext, same_queue
from worker.ops.filters import Filters
from worker.ops.scan import QueueReader

MAX_MESSAGES = 10_000
MAX_BYTES = 64 * 2**20
MAX_READ = 5 * MAX_MESSAGES  # a parking queue shared with other DLQs: read this many at most
HOLD_SECONDS = 60
FIRST_WAIT_SECONDS = 1.0


@dataclass(frozen=True)
class Entry:
    message_id: str
    view: ParkedView  # our metadata, and the original body and attributes
    group_id: str | None
    size: int  # bytes of the original body

    @property
    def meta(self) -> dict[str, str]:
        return self.view.meta


def grouped(entries: list[Entry], key: str) -> list[dict[str, Any]]:
    """Groups by a metadata key (reason, error), each with its oldest and newest."""
    groups: dict[str, dict[str, Any]] = {}
    for entry in entries:
        value = entry.meta.get(key, "unknown")
        at = entry.meta.get("parked-at", "")
        group = groups.setdefault(value, {"value": value, "count": 0, "oldest": at, "newest": at})
        group["count"] += 1
        group["oldest"] = min(group["oldest"], at)
        group["newest"] = max(group["newest"], at)
    return sorted(groups.values(), key=lambda g: (-g["count"], g["value"]))


def by_error_type(entries: list[Entry]) -> list[dict[str, Any]]:
    """Groups by the failure's type, each with what the target said most recently."""
    groups: dict[str, dict[str, Any]] = {}
    for entry in entries:
        value = error_type_of(entry.meta)
        at = entry.meta.get("parked-at", "")
        group = groups.setdefault(value, {"value": value, "count": 0, "newest": "", "said": None})
        group["count"] += 1
        if at >= group["newest"]:
            group["newest"] = at
            group["said"] = entry.meta.get("error-message") or group["said"]
    return sorted(groups.values(), key=lambda g: (-g["count"], g["value"]))


@dataclass
class Snapshot:
    queue: str
    expected: int  # the parking queue's visible count when the read began
    started: float = field(default_factory=time.time)
    finished: float | None = None
    entries: list[Entry] = field(default_factory=list)
    read: int = 0
    bytes: int = 0
    short: str | None = None  # why the read stopped before the end of the queue
    error: str | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    dlqs: tuple[str, ...] = ()  # the configured DLQs that share the parking queue (URLs)
    kept: Counter[str] = field(default_factory=Counter)  # entries by DLQ (of `dlqs`)

    def of(self, ctx: QueueContext) -> Snapshot:
        """What this read found of one DLQ's parked messages (the rest as read so far)."""
        mine = [e for e in self.entries if same_queue(e.view.source_queue, ctx.dlq.url)]
        short = self.short
        if len(mine) >= MAX_MESSAGES:
            capped = f"the first {len(mine):,} of this queue's messages read are shown"
            short = f"{capped}; {short}" if short else capped
        return dataclasses.replace(self, queue=ctx.name, entries=mine, short=short)

    def owner(self, view: ParkedView) -> str | None:
        """Which of the sharing DLQs parked it (None: another, or none configured)."""
        return next((d for d in self.dlqs if same_queue(view.source_queue, d)), None)

    def matching(self, filters: Filters) -> list[Entry]:
        return [e for e in self.entries if filters.matches(e.message_id, e.view)]

    def find(self, message_id: str) -> Entry | None:
        return next((e for e in self.entries if e.message_id == message_id), None)

    @property
    def age_seconds(self) -> float:
        return time.time() - (self.finished or self.started)


class QueueLocks(defaultdict[str, anyio.Lock]):
    """One lock per parking queue (by URL): the console's reads and actions of it take
    turns, whichever of the DLQs sharing it they are for."""

    def __init__(self) -> None:
        super().__init__(anyio.Lock)


class Snapshots:
    def __init__(self, tasks: TaskGroup, locks: QueueLocks) -> None:
        self._tasks = tasks
        self._locks = locks
        self._current: dict[str, Snapshot] = {}

    async def get(
        self, ctx: QueueContext, *, refresh: bool = False, dlqs: tuple[str, ...] = ()
    ) -> Snapshot:
        """The queue's part of its parking queue's snapshot: a new read when there is none
        (or `refresh`, unless one is under way); waits up to FIRST_WAIT_SECONDS for it.
        `dlqs`: the configured DLQs that share the parking queue (this one's by default)."""
        parking = ctx.parking.url
        snapshot = self._current.get(parking)
        if snapshot is None or (refresh and snapshot.finished is not None):
            snapshot = Snapshot(parking, 0, dlqs=dlqs or (ctx.dlq.url,))
            self._current[parking] = snapshot
            self._tasks.start_soon(self._read, ctx, snapshot)
        with anyio.move_on_after(FIRST_WAIT_SECONDS):
            await snapshot.done.wait()
        return snapshot.of(ctx)

    def forget(self, ctx: QueueContext) -> None:
        """After an action: the next page of any queue sharing its parking queue reads again."""
        self._current.pop(ctx.parking.url, None)

    async def _read(self, ctx: QueueContext, snapshot: Snapshot) -> None:
        try:
            async with self._locks[ctx.parking.url]:
                snapshot.started = time.time()
                snapshot.expected = (await read_depth(ctx.parking))["visible"]
                # Never held longer than HOLD_SECONDS a receive (the page says so): a
                # console killed mid-read hides nothing for long.
                reader = QueueReader(
                    ctx.parking,
                    hold=HOLD_SECONDS,
                    max_hold=HOLD_SECONDS,
                    expected=snapshot.expected,
                    until_expected=True,
                )
                async with reader:
                    await _fill(reader, ctx, snapshot)
        except Exception as exc:  # noqa: BLE001 - shown on the page, the console goes on
            snapshot.error = said(exc)
        finally:
            snapshot.finished = time.time()
            snapshot.done.set()


async def _fill(reader: QueueReader, ctx: QueueContext, snapshot: Snapshot) -> None:
    async with aclosing(reader.batches()) as batches:
        async for batch in batches:
            for record in batch:
                reader.keep(record)  # released at the end: a snapshot moves nothing
                view = record.view
                # Not parked by us from a configured DLQ, or its DLQ has its fill: each DLQ
                # sharing the parking queue keeps up to MAX_MESSAGES (a busy one does not
                # crowd the others out; nothing is kept that no page shows).
                owner = snapshot.owner(view) if view is not None else None
                if view is None or owner is None or snapshot.kept[owner] >= MAX_MESSAGES:
                    continue
                size = len(view.body.encode("utf-8"))
                snapshot.entries.append(Entry(record.message_id, view, record.group_id, size))
                snapshot.kept[owner] += 1
                snapshot.bytes += size
            # what this page has seen (the receivers may have read further: those batches
            # are still on their way here)
            snapshot.read += len(batch)
            full = all(snapshot.kept[d] >= MAX_MESSAGES for d in snapshot.dlqs)
            if snapshot.bytes >= MAX_BYTES or full:
                snapshot.short = f"the first {len(snapshot.entries):,} messages read are shown"
                return
            if snapshot.read >= MAX_READ:
                snapshot.short = f"stopped after reading {snapshot.read:,} messages"
                return
            if snapshot.read >= snapshot.expected > 0:
                return  # what the queue held when the read began: no empty polls to wait out
    snapshot.short = reader.incomplete
