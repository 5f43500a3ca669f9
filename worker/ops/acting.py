"""One replay or purge, as the command line and the console both run it: the payload rule
(`--transform`, else the queue's own transform for the target), the sender (the DLQ, or the
target through the queue's adapter, bucket and breaker), and the cutoff: only what was parked
before the command started (a replay never takes what it just sent back and the daemon parked
again; no action touches what its plan could not have seen)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime

from worker.aws.clients import Clients
from worker.ops import moves, senders
from worker.ops.context import QueueContext
from worker.ops.filters import Filters
from worker.ops.reshape import Edited, Reshape
from worker.ops.scan import QueueReader
from worker.ops.store import Location


@dataclass(frozen=True)
class Move:
    """What to do with the selected messages: replay (`to` the dlq or the target, with an
    optional transform) or purge (`to` None)."""

    to: str | None
    transform: str | None = None
    # the console's "edit and replay": the one selected message goes with this body (JSON,
    # checked before), its original in the backup and kept until the edited copy was sent
    body: str | None = None

    @property
    def verb(self) -> str:
        return f"replay to the {self.to}" if self.to else "purge"


def reshape_for(ctx: QueueContext, move: Move) -> Reshape | None:
    """`--transform`; replaying to the target without one applies the queue's own transform
    (its rules and hook are skipped: the operator decided)."""
    if move.to is None:
        return None
    auto = ctx.settings.target.kind == "auto"
    if move.body is not None:
        if auto:
            raise ValueError(
                "an edited body: with kind auto the parked body is the envelope that names the "
                "target, not what the target gets; replay it with --transform instead"
            )
        return Edited(ctx.name, move.body, unwrap=False)
    if move.transform and move.to == "dlq" and auto:
        raise ValueError(
            "--transform --to dlq: with kind auto the DLQ message's envelope names the "
            "target; replay --to target instead"
        )
    expression = move.transform or (ctx.settings.transform if move.to == "target" else None)
    return Reshape(ctx.name, expression, unwrap=auto) if expression else None


def started() -> str:
    """Now, as the parking metadata writes its time (ISO 8601, seconds, UTC)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


async def act(
    reader: QueueReader,
    ctx: QueueContext,
    clients: Clients,
    filters: Filters,
    move: Move,
    *,
    backup: Location | None,
    rate: float,
    tally: moves.Tally | None = None,
) -> tuple[moves.Tally, Reshape | None]:
    """The plan (`backup` None: nothing changes) or the move itself."""
    reshape = reshape_for(ctx, move)
    if backup is not None:  # acting: what is read waits for the rate (and the target's bucket)
        target_rate = ctx.settings.effective_rate_limit.per_second
        reader.paced(min(rate, target_rate) if move.to == "target" else rate)
    async with AsyncExitStack() as stack:
        send: senders.Send | None = None
        if move.to == "dlq":
            send = senders.to_dlq(ctx, reshape)
        elif move.to == "target":  # a dry run does not join the fleet
            send = await stack.enter_async_context(
                senders.to_target(ctx, clients, join=backup is not None, reshape=reshape)
            )
        result = await moves.move(
            reader,
            ctx,
            filters,
            send=send,
            backup=backup,
            rate=rate,
            clients=clients,
            reshape=reshape,
            cutoff=started(),
            tally=tally,
        )
    return result, reshape
