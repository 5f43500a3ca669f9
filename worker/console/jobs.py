"""The console's plans and actions, run in the background while a page shows their progress.

A plan is the command line's dry run (`worker/ops`: the same reader, filters and counts) that
also keeps the ids it matched. Confirming it starts the action on exactly those ids under the
plan's filter — a message parked after the plan is not touched — and a plan is confirmed once
(a second confirmation, a double click or another person, is refused). The backup is written
before anything moves (`ops.moves`), its path shown from the start; one audit line is written
when an action ends, however it ends.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from worker.aws.attributes import clear_pause, read_depth, read_pause, write_pause
from worker.aws.clients import Clients
from worker.aws.errors import said
from worker.console.security import Audit
from worker.console.snapshot import QueueLocks, Snapshots
from worker.core.jsontext import loads
from worker.core.limits import message_size, utf8_len
from worker.ops import reading
from worker.ops.acting import Move, act
from worker.ops.context import QueueContext, queue_name
from worker.ops.filters import Filters
from worker.ops.moves import Tally
from worker.ops.records import default_backup_path
from worker.ops.reshape import preview
from worker.ops.scan import QueueReader
from worker.ops.store import Location, inside

ACTIONS = ("replay", "purge", "export", "pause", "resume")
Attributes = dict[str, dict[str, Any]]
KEEP_JOBS = 200


@dataclasses.dataclass
class Job:
    id: str
    kind: str  # "plan" or "act"
    action: str  # one of ACTIONS
    queue: str
    who: str
    params: dict[str, list[str]]  # the filter, as the page's query parameters
    filters: Filters
    move: Move | None = None
    note: str | None = None  # pause: the reason asked; a plan: the current pause note
    rate: float = 10.0
    state: str = "running"  # running, done, failed, confirmed (a plan, once)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    expected: int | None = None
    tally: Tally | None = None
    transform: str | None = None
    example: tuple[str, str] | None = None
    example_id: str | None = None  # the parked message `example` (and `diff`) show
    diff: list[str] | None = None  # an edited body: the original against it, line by line
    backup: Location | None = None
    error: str | None = None
    notice: str | None = None  # what a finished action should say beside its counts
    started: float = dataclasses.field(default_factory=time.time)
    finished: float | None = None

    # the read's watcher (ops.progress.Watcher)
    def update(self, **counts: int) -> None:
        self.counts.update(counts)

    def finish(self) -> None:
        pass


def body_diff(before: str, after: str) -> list[str]:
    """The original body against the edited one, line by line (JSON indented first)."""

    def lines(text: str) -> list[str]:
        try:
            return json.dumps(loads(text), indent=2, ensure_ascii=False).splitlines()
        except ValueError:
            return text.splitlines()

    return list(
        difflib.unified_diff(lines(before), lines(after), "parked", "edited", lineterm="", n=2)
    )


class PlanRefused(ValueError):
    """What the plan found it cannot do (said on its page as it is)."""


async def dlq_refuses(ctx: QueueContext, body: str, attributes: Attributes) -> str | None:
    """Why the DLQ would refuse an edited body with the attributes that go with it (the
    parked message's own), or None."""
    size, limit = message_size(body, attributes), await ctx.dlq.max_message_bytes()
    if size <= limit:
        return None
    return (
        f"the edited body is {size:,} bytes with the message's attributes: the DLQ "
        f"{queue_name(ctx.dlq.url)} takes messages of at most {limit:,} bytes (its "
        "MaximumMessageSize)"
    )


class Jobs:
    def __init__(
        self,
        tasks: Any,
        locks: QueueLocks,
        snapshots: Snapshots,
        clients: Clients,
        audit: Audit,
        backup_dir: Location,
        *,
        log_bodies: bool = False,
    ) -> None:
        self._tasks = tasks
        self._locks = locks
        self._snapshots = snapshots
        self._clients = clients
        self.audit = audit
        self.backup_dir = backup_dir
        self._log_bodies = log_bodies
        self._jobs: dict[str, Job] = {}

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def _add(self, job: Job, run: Callable[[Job], Any]) -> Job:
        self._jobs[job.id] = job
        finished = [j for j in self._jobs.values() if j.finished is not None]
        for old in finished[: max(0, len(self._jobs) - KEEP_JOBS)]:
            del self._jobs[old.id]
        self._tasks.start_soon(run, job)
        return job

    def plan(self, ctx: QueueContext, job: Job) -> Job:
        async def run(job: Job) -> None:
            try:
                if job.action in ("pause", "resume"):
                    job.note = (await read_pause(ctx.dlq.client, ctx.dlq.url)).note
                else:
                    await self._read(ctx, job, backup=None)
                job.state = "done"
            except PlanRefused as exc:
                job.state, job.error = "failed", str(exc)
            except Exception as exc:  # noqa: BLE001 - shown on the job's page
                job.state, job.error = "failed", said(exc)
            finally:
                job.finished = time.time()

        return self._add(job, run)

    def confirm(
        self, ctx: QueueContext, plan: Job, who: str, rate: float, reason: str | None
    ) -> Job:
        """The action of a finished plan, once, by `who` (ValueError says why not)."""
        if plan.kind != "plan" or plan.state != "done":
            raise ValueError("this plan was confirmed already (or has not finished): plan again")
        ids = plan.tally.ids if plan.tally and plan.tally.ids is not None else set()
        if plan.action in ("replay", "purge", "export") and not ids:
            raise ValueError("the plan matched no message: nothing to do")
        plan.state = "confirmed"
        filters = dataclasses.replace(plan.filters, ids=frozenset(ids), limit=None)
        job = dataclasses.replace(
            plan,
            id=secrets.token_urlsafe(12),
            kind="act",
            who=who,
            filters=filters,
            rate=rate,
            note=reason if plan.action == "pause" else None,
            state="running",
            counts={},
            tally=None,
            started=time.time(),
            finished=None,
        )
        # named per job: two actions confirmed in the same second never share a file
        if job.action in ("replay", "purge", "export"):
            kind = "export" if job.action == "export" else "backup"
            name = default_backup_path(ctx.name, kind=kind, suffix=f"-{job.id[:8]}")
            job.backup = inside(self.backup_dir, str(name))
        return self._add(job, lambda j: self._act(ctx, j))

    async def _read(self, ctx: QueueContext, job: Job, backup: Location | None) -> None:
        async with self._locks[ctx.parking.url]:
            job.expected = (await read_depth(ctx.parking))["visible"]
            reader = QueueReader(ctx.parking, progress=job, expected=job.expected)
            try:
                async with reader:
                    await self._run(ctx, job, backup, reader)
            finally:
                if reader.incomplete is not None:
                    job.error = f"incomplete: {reader.incomplete}"

    async def _run(
        self, ctx: QueueContext, job: Job, backup: Location | None, reader: QueueReader
    ) -> None:
        if job.action == "export" and backup is not None:
            written = await reading.export(reader, ctx, job.filters, backup, self._clients)
            job.tally = Tally(done=written)
            return
        move = job.move if job.action == "replay" and job.move else Move(None)
        job.tally = Tally(ids=set() if backup is None else None)
        _, reshape = await act(
            reader,
            ctx,
            self._clients,
            job.filters,
            move,
            backup=backup,
            rate=job.rate,
            tally=job.tally,
        )
        if reshape is not None:
            job.transform = reshape.expression
        if job.tally.example is not None:
            of = job.tally.example_of
            edit = job.move.body if job.move and job.move.to == "dlq" else None
            view = of.view if of is not None else None
            # the plan's own read of the message (the page's snapshot may not have it),
            # before the page may show anything of it
            why = await dlq_refuses(ctx, edit, view.attributes) if edit and view else None
            if why is not None:
                raise PlanRefused(why)
            if job.move is not None and job.move.body is not None:
                job.diff = body_diff(*job.tally.example)
            job.example = tuple(preview(t) for t in job.tally.example)  # type: ignore[assignment]
            job.example_id = of.message_id if of is not None else None

    async def _act(self, ctx: QueueContext, job: Job) -> None:
        try:
            if job.action == "pause":
                job.note = await write_pause(ctx.dlq, job.note)
            elif job.action == "resume":
                await clear_pause(ctx.dlq)
            else:
                await self._read(ctx, job, backup=job.backup)
                if job.action in ("replay", "purge") and job.tally and not job.tally.total:
                    # another person or command moved them first: not a failure, but say it
                    job.notice = "none of the planned messages is parked any more: nothing changed"
            failed = job.tally is not None and bool(job.tally.failed)
            job.state = "failed" if failed or job.error else "done"
        except Exception as exc:  # noqa: BLE001 - shown on the job's page and audited
            job.state, job.error = "failed", said(exc)
        finally:
            job.finished = time.time()
            self._snapshots.forget(ctx)
            self._audit_action(job)

    def _audit_action(self, job: Job) -> None:
        tally = job.tally
        counts: dict[str, Any] = {}
        if tally is not None:
            counts = {"matched": tally.total or tally.done, "done": tally.done}
            counts["failed"] = len(tally.failed)
        fields: dict[str, Any] = {"filter": job.params, "counts": counts, "state": job.state}
        if job.move is not None and job.action == "replay":
            fields["to"] = job.move.to
            if job.move.transform:
                fields["transform"] = job.move.transform
            if job.move.body is not None:  # a body: in the audit only with `log_bodies`
                # (the backup keeps it, `sent_as`, beside the original)
                fields["edited_body_bytes"] = utf8_len(job.move.body)
                if self._log_bodies:
                    fields["edited_body"] = job.move.body
        if job.backup is not None and tally is not None and (tally.backed_up or tally.done):
            fields["backup"] = str(job.backup)  # written: something was backed up or exported
        if job.note is not None:
            fields["note"] = job.note
        if job.error is not None:
            fields["error"] = job.error
        if job.notice is not None:
            fields["notice"] = job.notice
        self.audit(job.who, job.action, job.queue, **fields)
