"""Where a replay sends what it moves: back to the DLQ, or to the target through the queue's own
adapter, bucket and breaker (the daemon's `Guard`, and the fleet's share when coordination is
on). A sender returns the error code of each message that was not accepted: those stay parked."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CollectorRegistry

from worker.aws.clients import Clients
from worker.aws.facts import DlqFacts
from worker.aws.sqs import SqsQueue, message_entry
from worker.core.parking import DEFAULT_GROUP_ID, source_marked
from worker.core.rounds import GroupRounds
from worker.decisions.keys import IdempotencyKey
from worker.fleet.guards import Guards
from worker.metrics import Metrics
from worker.ops.context import QueueContext
from worker.ops.records import Record
from worker.ops.reshape import Reshape, record_view, reshaped
from worker.targets.base import Delivery, Target
from worker.targets.guard import Guard

# Sends a chunk of records on; returns the error code of each one that was not accepted.
Send = Callable[[Sequence[Record]], Awaitable[dict[str, str]]]
# (message id, body, attributes, group id, trace header) of a message to send.
Outgoing = tuple[str, str, dict[str, dict[str, Any]], str | None, str | None]


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
    for index, (message_id, body, attributes, group, trace) in enumerate(items):
        entry = message_entry(str(index), body, attributes, trace_header=trace)
        entries.append({**entry, **_fifo_fields(queue, group)})
        ids[str(index)] = message_id
    # FIFO: an entry is never sent again behind later ones of its group (it stays, refused)
    _, failed = await queue.send(entries, attempts=1 if queue.is_fifo else 3)
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
            items.append((r.message_id, body, attributes, group, r.trace_header))
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
    facts = DlqFacts(await clients.of(ctx.settings).get("sqs"), ctx.dlq.url)
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
