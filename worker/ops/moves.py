"""The operator commands that change a queue: replay, purge, restore (pause and resume write
the DLQ's tag: `worker.aws.attributes`).

The safety rules of SPEC.md are the feature: a dry run (the plan) unless `--yes`; a JSONL
backup written and flushed before anything is deleted or moved; a parked message is deleted
only after its send succeeded (every `Failed` entry read); a bounded rate; Ctrl-C stops
between batches, so every message is in exactly one place.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import anyio
from prometheus_client import CollectorRegistry

from worker.aws.clients import Clients
from worker.aws.facts import DlqFacts
from worker.aws.sqs import SqsQueue, message_entry
from worker.core.bucket import TokenBucket
from worker.core.parking import DEFAULT_GROUP_ID, source_marked
from worker.core.rounds import GroupRounds
from worker.decisions.keys import IdempotencyKey
from worker.fleet.guards import Guards
from worker.metrics import Metrics
from worker.ops.context import QueueContext
from worker.ops.filters import Filters
from worker.ops.reading import selected
from worker.ops.records import Record
from worker.ops.reshape import Reshape, example, record_view, reshaped
from worker.ops.scan import QueueReader
from worker.ops.store import Location, Writer, open_writer
from worker.targets.base import Delivery, Target
from worker.targets.guard import Guard

# Sends a chunk of records on; returns the error code of each one that was not accepted.
Send = Callable[[Sequence[Record]], Awaitable[dict[str, str]]]
# (message id, body, attributes, group id) of a message to send.
Outgoing = tuple[str, str, dict[str, dict[str, Any]], str | None]


@dataclass
class Tally:
    matched: Counter[tuple[str, str]] = field(default_factory=Counter)
    done: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # message id -> error
    example: tuple[str, str] | None = None  # a dry run with --transform: the first, before/after
    ids: set[str] | None = None  # the matched ids, when asked for (the console's plan)

    def add(self, records: Sequence[Record]) -> None:
        for r in records:
            meta = r.view.meta if r.view else {}
            self.matched[(meta.get("reason", "?"), meta.get("error", "?"))] += 1
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
        out.write(f"  reason {reason:<32} {count}\n")
    for error, count in tally.by_error.items():
        out.write(f"  error  {error:<32} {count}\n")


def _fifo_fields(queue: SqsQueue, group_id: str | None) -> dict[str, str]:
    if not queue.is_fifo:
        return {}
    return {
        "MessageGroupId": group_id or DEFAULT_GROUP_ID,
        "MessageDeduplicationId": uuid.uuid4().hex,
    }


async def send_entries(queue: SqsQueue, items: Sequence[Outgoing]) -> dict[str, str]:
    """SendMessageBatch (10 entries and 1 MiB a request); the error of each refused id."""
    entries = []
    ids = {}
    for index, (message_id, body, attributes, group) in enumerate(items):
        entries.append(
            {**message_entry(str(index), body, attributes), **_fifo_fields(queue, group)}
        )
        ids[str(index)] = message_id
    _, failed = await queue.send(entries)
    return {ids[entry_id]: failure.code for entry_id, failure in failed.items()}


def to_dlq(ctx: QueueContext, reshape: Reshape | None = None) -> Send:
    """The original body (or `--transform`'s payload) and attributes back to the DLQ, without
    ours (fresh attempts) but the queue that dead-lettered it, when it is known."""

    async def send(records: Sequence[Record]) -> dict[str, str]:
        ready, failed = reshaped(records, reshape)
        limit = await ctx.dlq.max_message_bytes()
        items = []
        for r, body in ready:
            assert r.view is not None
            group = r.group_id or r.view.meta.get("group-id")
            source = r.view.meta.get("source-arn")
            attributes = source_marked(r.view.attributes, body, source, limit)
            items.append((r.message_id, body, attributes, group))
        return {**failed, **(await send_entries(ctx.dlq, items) if items else {})}

    return send


async def _in_group_order(
    guard: Guard, target: Target, deliveries: list[Delivery]
) -> dict[str, str]:
    """A FIFO group one message at a time, in order, in rounds (`GroupRounds`, as the daemon
    delivers); after one is refused the rest of its group stays parked. A message without a
    group is a group of its own. The error code of each message not delivered."""
    refused: dict[str, str] = {}
    rounds = GroupRounds(deliveries, lambda d: d.message.group_id or d.message.message_id)
    while rounds:
        heads = rounds.next_round()
        results = await guard.deliver(target, heads)
        for head, tried in zip(heads, results, strict=True):
            if tried is None or tried.error is not None:
                code = tried.error.code if tried is not None and tried.error else "CircuitOpen"
                refused[head.message.message_id] = code
                for behind in rounds.refused(head):
                    refused[behind.message.message_id] = "WaitingForGroup"
    return refused


@asynccontextmanager
async def to_target(
    ctx: QueueContext, clients: Clients, *, join: bool, reshape: Reshape | None = None
) -> AsyncIterator[Send]:
    """Through the queue's own target adapter, bucket and breaker settings, by the same
    delivery step as the daemon's (`Guard.deliver`). With `join` and coordination configured,
    the command is a member of the fleet while it runs: it takes its share of the target's
    rate (the daemons' shares shrink meanwhile) and honours the fleet's breaker (an open
    breaker refuses the replay; the messages stay parked)."""
    facts = DlqFacts(await clients.get("sqs"), ctx.dlq.url)
    await facts.refresh()
    q = ctx.settings
    guards = await Guards.open(ctx.coordination, clients, Metrics(CollectorRegistry()), join=join)
    target, guard = await guards.target(q, facts)
    # The queue's own idempotency key, as the daemon computes it (SPEC.md, Idempotency).
    keys = IdempotencyKey(ctx.name, q.idempotency_key) if q.idempotency_key else None
    unwrap = q.target.kind == "auto"

    async def send(records: Sequence[Record]) -> dict[str, str]:
        ready, refused = reshaped(records, reshape)
        deliveries = []
        for r, body in ready:
            payload = body if reshape is not None else None
            # The key every attempt had: the expression's, else the DLQ message id. The
            # message keeps the parked copy's id: what was refused is told by that.
            key = keys.of(record_view(ctx.name, r, unwrap=unwrap)) if keys else None
            message = facts.verified(r.original())  # the source it names, if it feeds the DLQ
            deliveries.append(
                Delivery(message, 1, payload, key or r.dlq_message_id, queue=ctx.name)
            )
        return {**refused, **(await _in_group_order(guard, target, deliveries))}

    if guards.fleet is None:
        yield send
        return
    async with guards.fleet.taking_part():
        yield send


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
    delete from the parking queue exactly what was accepted, keep the rest parked. `tally`
    (else a new one) is filled as it goes: a watcher sees the counts grow. `clients`: for a
    backup in S3."""
    tally = tally if tally is not None else Tally()
    writer: Writer | None = None
    bucket = TokenBucket(rate, max(1, int(rate)), time.monotonic)
    try:
        async for chosen in selected(reader, ctx, filters):
            batch = _before(chosen, cutoff, reader)
            if not batch:
                continue
            tally.add(batch)
            if backup is None:
                if reshape is not None and tally.example is None:
                    tally.example = example(reshape, batch[0])
                for record in batch:
                    reader.keep(record)
                continue
            if writer is None:  # created with the first match, never overwritten
                writer = open_writer(backup, clients)
            await anyio.sleep(bucket.reserve(len(batch)))
            try:
                await writer.write(batch, ctx.parking.url)  # stored before anything moves
            except BaseException:
                for record in batch:  # not backed up: nothing of it moves
                    reader.keep(record)
                raise
            with anyio.CancelScope(shield=True):  # a chunk is moved whole, Ctrl-C or not
                await _settle(reader, ctx, batch, send, tally)
            reader.progress(done=tally.done, failed=len(tally.failed))
    finally:
        if writer is not None:
            with anyio.CancelScope(shield=True):
                await writer.close()
    return tally


def _before(batch: list[Record], cutoff: str | None, reader: QueueReader) -> list[Record]:
    """Only what was parked before the command started (`cutoff`, ISO seconds): a message
    replayed to the DLQ that the daemon parks again meanwhile is not replayed twice in one
    run. The rest is kept where it is."""
    if cutoff is None:
        return batch
    kept = []
    for record in batch:
        parked_at = record.view.meta.get("parked-at", "") if record.view else ""
        if parked_at > cutoff:
            reader.keep(record)
        else:
            kept.append(record)
    return kept


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
            tally.failed[record.message_id] = f"sent, but not deleted from parking ({code})"
            reader.keep(record)
        else:
            tally.done += 1
