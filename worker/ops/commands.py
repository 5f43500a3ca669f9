"""Running an operator command: clients, Ctrl-C, output and exit codes (SPEC.md rule 6:
0 done or dry run, 1 some messages failed, 2 bad arguments or configuration)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TextIO

import anyio

from worker.aws.attributes import clear_pause, read_depth, write_pause
from worker.aws.clients import OPERATOR, Clients
from worker.aws.errors import error_code, first_failure
from worker.aws.sqs import SqsQueue
from worker.ops import moves, reading, tally
from worker.ops.acting import Move, act
from worker.ops.context import (
    ContextError,
    QueueContext,
    existing,
    open_dlq,
    open_queue,
    place_of_ref,
)
from worker.ops.explain import explain
from worker.ops.filters import FilterError, Filters
from worker.ops.progress import Progress
from worker.ops.records import default_backup_path
from worker.ops.reshape import Reshape, preview
from worker.ops.restore import restore
from worker.ops.scan import PARALLEL, QueueReader
from worker.ops.store import Location, exists, inside, location
from worker.ops.store import folder as backup_folder
from worker.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def pool(args: argparse.Namespace) -> int:
    """Connections per client: a request in flight for each receive and each chunk moving."""
    return 2 * getattr(args, "parallel", PARALLEL) + 4


@asynccontextmanager
async def interruptible() -> AsyncIterator[anyio.Event]:
    """An event set by Ctrl-C (or SIGTERM): commands stop between batches."""
    stop = anyio.Event()

    async def watch() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                stop.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        yield stop
        tg.cancel_scope.cancel()


def filters_from(args: argparse.Namespace) -> Filters:
    return Filters.build(
        reasons=args.reason,
        errors=args.error,
        error_types=args.error_type,
        ids=args.id,
        parked_before=args.parked_before,
        parked_after=args.parked_after,
        body_contains=args.body_contains,
        match=args.match,
        limit=args.limit,
    )


async def _reader(
    ctx: QueueContext, label: str, err: TextIO, stop: anyio.Event, parallel: int
) -> QueueReader:
    depth = await read_depth(ctx.parking)
    visible = depth["visible"]
    if depth["in_flight"]:  # another read holds them: the keeper, the console, a command
        err.write(
            f"{label}: {depth['in_flight']} parked messages are held by another reader now "
            "(the keeper, the console or another command): this read cannot see them\n"
        )
    progress = Progress(err, label, visible)
    return QueueReader(
        ctx.parking, progress=progress, stop=stop, expected=visible, parallel=parallel
    )


def _backup_path(args: argparse.Namespace, ctx: QueueContext) -> Location:
    """`--backup`, else a new name in `operator.backup_dir` (else the working directory);
    decided once per command (the name has the time in it)."""
    chosen: Location | None = getattr(args, "backup_location", None)
    if chosen is None:
        name = str(default_backup_path(ctx.name))
        where = ctx.operator.backup_dir
        if args.backup:
            chosen = location(args.backup)
        else:
            chosen = inside(backup_folder(where), name) if where else location(name)
        args.backup_location = chosen
    return chosen


async def _parked(
    args: argparse.Namespace, ctx: QueueContext, clients: Clients, io: tuple[TextIO, TextIO]
) -> int:
    out, err = io
    filters = filters_from(args)
    if getattr(args, "yes", False) and await exists(backup := _backup_path(args, ctx), clients):
        raise FileExistsError(f"{backup}: exists; a backup is never overwritten")
    if args.action == "export" and await exists(target := location(args.out), clients):
        raise FileExistsError(f"{target}: exists; an export is never overwritten")
    async with interruptible() as stop:
        reader = await _reader(ctx, f"{args.action} {ctx.name}", err, stop, args.parallel)
        try:
            async with reader:
                code = await _parked_action(args, ctx, clients, reader, filters, out)
        finally:
            if reader.unreleased:
                err.write(f"{reader.unreleased} messages could not be released now; they ")
                err.write("reappear when their hold ends\n")
        if reader.incomplete is not None:
            err.write(f"{args.action}: incomplete: {reader.incomplete}\n")
            return EXIT_FAILED
        return code


async def _parked_action(
    args: argparse.Namespace,
    ctx: QueueContext,
    clients: Clients,
    reader: QueueReader,
    filters: Filters,
    out: TextIO,
) -> int:
    action = args.action
    if action == "summary":
        result = await tally.summary(reader, ctx, filters)
        if args.json:
            out.write(json.dumps(result) + "\n")
        else:
            tally.print_summary(result, out)
        return EXIT_OK
    if action == "list":
        style = {"as_json": args.json, "show_body": args.show_body}
        await tally.listing(reader, ctx, filters, out, **style)
        return EXIT_OK
    if action == "export":
        written = await reading.export(reader, ctx, filters, location(args.out), clients)
        out.write(f"exported {written} messages to {args.out}\n")
        return EXIT_OK
    return await _move(args, ctx, clients, reader, filters, out)


async def _move(
    args: argparse.Namespace,
    ctx: QueueContext,
    clients: Clients,
    reader: QueueReader,
    filters: Filters,
    out: TextIO,
) -> int:
    move = Move(args.to if args.action == "replay" else None, getattr(args, "transform", None))
    backup = _backup_path(args, ctx)
    tally = moves.Tally()
    try:
        _, reshape = await act(
            reader,
            ctx,
            clients,
            filters,
            move,
            backup=backup if args.yes else None,
            rate=args.rate,
            tally=tally,
        )
    except Exception as raised:
        if not (args.yes and (tally.done or tally.failed)):
            raise
        exc = first_failure(raised)  # what moved before it stopped, and why it stopped
        out.write("stopped by an error\n")
        if tally.backed_up:
            out.write(f"backup: {backup}\n")
        _print_done(tally, out)
        sys.stderr.write(f"{args.action}: stopped: {error_code(exc)}: {exc}\n")
        return EXIT_FAILED
    moves.print_plan(move.verb, ctx, filters, tally, out)
    if reshape is not None:
        out.write(f"transform: {reshape.expression}\n")
    if tally.example is not None:
        before, after = tally.example
        out.write(f"  first match before: {preview(before)}\n")
        out.write(f"  first match after:  {preview(after)}\n")
    if tally.later:
        out.write(f"left {tally.later} matching messages parked after the command started ")
        out.write("(not in its plan; run it again for them)\n")
    if not args.yes:
        out.write("dry run: nothing changed; add --yes to act\n")
        return EXIT_OK
    if tally.backed_up:
        out.write(f"backup: {backup}\n")
    _print_done(tally, out)
    if reader.stopped:
        out.write("interrupted (Ctrl-C): the rest stays parked\n")
    return EXIT_FAILED if tally.failed else EXIT_OK


def _print_done(tally: moves.Tally, out: TextIO) -> None:
    out.write(f"done: {tally.done}, failed: {len(tally.failed)}\n")
    for message_id, code in tally.failed.items():
        where = "" if code.startswith(moves.SENT_NOT_DELETED) else " (still parked)"
        out.write(f"  failed {message_id}: {code}{where}\n")


async def _queue_command(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    out = sys.stdout
    if args.command == "status":
        rows = await reading.status(settings, clients)
        if args.json:
            out.write(json.dumps(rows) + "\n")
        else:
            reading.print_status(rows, out)
        return EXIT_FAILED if any("error" in row for row in rows) else EXIT_OK
    if args.command == "restore":
        sqs = await place_of_ref(settings, clients, args.to).get("sqs")
        queue = SqsQueue(sqs, await existing(sqs, args.to, "--to"))  # a typo: exit 2
        async with interruptible() as stop:
            count, failed = await restore(
                location(args.file),
                queue,
                yes=args.yes,
                rate=args.rate,
                stop=stop,
                clients=clients,
                parallel=args.parallel,
            )
        if not args.yes:
            planned = reading.plural(count, "message")
            out.write(f"plan: restore {planned} from {args.file} to {queue.url}\n")
            out.write("dry run: nothing changed; add --yes to act\n")
            return EXIT_OK
        restored = reading.plural(count, "message")
        out.write(f"restored {restored} to {queue.url}, failed: {len(failed)}\n")
        for message_id, code in failed.items():
            out.write(f"  failed {message_id}: {code}\n")
        return EXIT_FAILED if failed else EXIT_OK
    if args.command == "explain":
        return await explain(args, settings, clients, out)
    if getattr(args, "transform", None):
        Reshape(args.queue, args.transform, unwrap=False)  # a syntax error before any call
    if args.command == "pause":
        name, dlq = await open_dlq(settings, args.queue, clients)
        note = await write_pause(dlq, args.reason)
        out.write(f"paused {name} ({note}); every replica stops receiving within ~30 s\n")
        return EXIT_OK
    if args.command == "resume":
        name, dlq = await open_dlq(settings, args.queue, clients)
        await clear_pause(dlq)
        out.write(f"resumed {name}; replicas receive again within ~30 s\n")
        return EXIT_OK
    ctx = await open_queue(settings, args.queue, clients)
    return await _parked(args, ctx, clients, (out, sys.stderr))


USAGE_ERRORS = (ContextError, FilterError, FileExistsError, ValueError)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        async with AsyncExitStack() as stack:
            return await _queue_command(
                args,
                settings,
                Clients(
                    settings.aws, stack, pool=pool(args), accounts=settings.accounts, who=OPERATOR
                ),
            )
    except Exception as raised:  # noqa: BLE001 - said in one line, with the exit code it means
        exc = first_failure(raised)  # raised inside task groups (the Ctrl-C watcher's, moves')
        if isinstance(exc, USAGE_ERRORS):
            print(f"{args.command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"{args.command}: {error_code(exc)}: {exc}", file=sys.stderr)
        return EXIT_FAILED
