"""The operator commands that change a queue: replay, purge, restore (pause and resume write
the DLQ's tag: `worker.aws.attributes`).

The safety rules of SPEC.md are the feature: a dry run (the plan) unless `--yes`; a JSONL
backup written and flushed before anything is deleted or moved; a parked message is deleted
only after its send succeeded (every `Failed` entry read); a bounded rate; Ctrl-C stops
between batches, so every message is in exactly one place.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import TextIO

import anyio

from worker.aws.clients import Clients
from worker.core.bucket import TokenBucket
from worker.ops.context import QueueContext
from worker.ops.filters import Filters
from worker.ops.reading import Selection
from worker.ops.records import Record
from worker.ops.reshape import Edited, Reshape, example
from worker.ops.scan import QueueReader
from worker.ops.senders import Send
from worker.ops.store import Location, Writer, open_writer
from worker.ops.tally import counted, shown

SENT_NOT_DELETED = "sent, but its delete from the parking queue failed"


@dataclass
class Tally:
    matched: Counter[tuple[str, str]] = field(default_factory=Counter)
    done: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # message id -> error
    example: tuple[str, str] | None = None  # a dry run with --transform: the first, before/after
    example_of: Record | None = None  # the parked message `example` shows
    ids: set[str] | None = None  # the matched ids, when asked for (the console's plan)
    later: int = 0  # matched, but parked after the command started: left where they are
    backed_up: int = 0  # written to the backup

    def add(self, records: Sequence[Record]) -> None:
        for r in records:
            meta = r.view.meta if r.view else {}
            counted(self.matched, (meta.get("reason", "?"), meta.get("error", "?")))
            if self.ids is not None:
                self.ids.add(r.message_id)

    @property
    def total(self) -> int:
        return sum(self.matched.values())

    @property
    def by_reason(self) -> dict[str, int]:
        return self._by(0)

    @property
    def by_error(self) -> dict[str, int]:
        return self._by(1)

    def _by(self, index: int) -> dict[str, int]:
        """Counts of one half of the (reason, error) pairs, the largest first."""
        counts: Counter[str] = Counter()
        for pair, count in self.matched.items():
            counts[pair[index]] += count
        return dict(counts.most_common())


def print_plan(verb: str, ctx: QueueContext, filters: Filters, tally: Tally, out: TextIO) -> None:
    what = f"all {tally.total}" if filters.selects_all else str(tally.total)
    out.write(f"plan: {verb} {what} parked messages of {ctx.name} ({ctx.parking.url})\n")
    for reason, count in tally.by_reason.items():
        out.write(f"  reason {shown(reason):<32} {count}\n")
    for error, count in tally.by_error.items():
        out.write(f"  error  {shown(error):<32} {count}\n")


async def move(
    reader: QueueReader,
    ctx: QueueContext,
    filters: Filters,
    *,
    send: Send | None,
    backup: Location | None,
    rate: float,
    clients: Clients | None = None,
    reshape: Reshape | None = None,
    cutoff: str | None = None,
    tally: Tally | None = None,
) -> Tally:
    """Dry run (`backup` None) or act: back up each chunk, send it on (`send` None: purge),
    delete from the parking queue exactly what was accepted, keep the rest parked. As many
    chunks at once as the reader has receives (`reader.parallel`), all of them under one
    `rate`. `tally` (else a new one) is filled as it goes: a watcher sees the counts grow.
    `clients`: for a backup in S3."""
    mover = _Mover(reader, ctx, send, backup, clients, tally if tally is not None else Tally())
    if isinstance(reshape, Edited):  # the backup keeps what was sent beside the original
        mover.sent_as = reshape.body
    selection = Selection(reader, ctx, filters, cutoff)
    bucket = TokenBucket(rate, max(1, int(rate)), time.monotonic)

    async def work() -> None:
        async with aclosing(reader.batches()) as batches:
            async for received in batches:
                batch = selection.choose(received)
                mover.tally.later = selection.later
                if not batch:
                    continue
                mover.tally.add(batch)
                if backup is None:
                    if reshape is not None and mover.tally.example is None:
                        mover.tally.example = example(reshape, batch[0])
                        mover.tally.example_of = batch[0]
                    for record in batch:
                        reader.keep(record)
                    continue
                await mover.move(batch, bucket.reserve(len(batch)))

    try:
        async with anyio.create_task_group() as tasks:
            for _ in range(reader.parallel):
                tasks.start_soon(work)
    finally:
        with anyio.CancelScope(shield=True):
            await mover.close()
    return mover.tally


class _Mover:
    """One chunk at a time per task: after its turn under the rate, stored in the backup
    (opened with the first match, never overwritten), then sent on and deleted whole."""

    def __init__(
        self,
        reader: QueueReader,
        ctx: QueueContext,
        send: Send | None,
        backup: Location | None,
        clients: Clients | None,
        tally: Tally,
    ) -> None:
        self._reader = reader
        self._ctx = ctx
        self._send = send
        self._backup = backup
        self._clients = clients
        self._writer: Writer | None = None
        self.tally = tally
        self.sent_as: str | None = None  # an edited body: written beside each original

    async def move(self, batch: list[Record], wait: float) -> None:
        reader = self._reader
        stored = False
        try:
            if await reader.wait_or_stop(wait):  # Ctrl-C meanwhile: this chunk stays
                if self._writer is None and self._backup is not None:
                    self._writer = open_writer(self._backup, self._clients)
                assert self._writer is not None
                stored_as = batch
                if self.sent_as is not None:
                    stored_as = [replace(r, sent_as=self.sent_as) for r in batch]
                await self._writer.write(stored_as, self._ctx.parking.url)  # before it moves
                self.tally.backed_up += len(batch)
                # Ctrl-C while it was written (an S3 part): backed up, and not moved
                stored = not reader.stopped
        finally:
            if not stored:  # stopped, or the backup failed: none of it moves
                for record in batch:
                    reader.keep(record)
        if not stored:
            return
        with anyio.CancelScope(shield=True):  # a chunk is moved whole, Ctrl-C or not
            await _settle(reader, self._ctx, batch, self._send, self.tally)
        reader.progress(done=self.tally.done, failed=len(self.tally.failed))

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()


async def _settle(
    reader: QueueReader, ctx: QueueContext, batch: list[Record], send: Send | None, tally: Tally
) -> None:
    refused = await send(batch) if send is not None else {}
    accepted = {r.message_id: r.receipt_handle for r in batch if r.message_id not in refused}
    not_deleted = await ctx.parking.delete(accepted) if accepted else {}
    for record in batch:
        if record.message_id in refused:
            tally.failed[record.message_id] = refused[record.message_id]
            reader.keep(record)
        elif record.message_id in not_deleted:
            code = not_deleted[record.message_id].code
            tally.failed[record.message_id] = (
                f"{SENT_NOT_DELETED} ({code}): it may be both there and in its destination"
            )
            reader.keep(record)
        else:
            tally.done += 1
