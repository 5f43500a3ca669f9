"""The per-queue poller: receive → run pipelines → settle in batches.

Concurrency and turns to poll come from its `Room`; the receive asks only for what fits.
Between receives its `QueueWatch` does the idle checks, depth gauges and pause tag.
A lease heartbeat extends visibility while a batch is in delivery.
Shutdown: `stop_receiving()`, then batches finish; `abort()` cancels deliveries and
releases their messages (visibility 0), settled under a shielded scope.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from worker.aws.errors import error_code, kind_of, metric_code
from worker.aws.sources import SourceBook
from worker.aws.sqs import SqsQueue, retention_seconds
from worker.core.envelope import DlqMessage, parse_message
from worker.core.outcomes import Release, Retry
from worker.metrics import Metrics
from worker.pipeline import Decision, Pipeline
from worker.room import Room
from worker.settings import VISIBILITY_LIMIT_SECONDS, QueueSettings
from worker.settle import Settler
from worker.watch import QueueWatch

log = structlog.get_logger("worker.poller")

SETTLE_DEADLINE_SECONDS = 20  # a shielded settle never holds shutdown longer than this
RECEIVE_BACKOFF_MAX_SECONDS = 30.0
CRASH_RETRY_SECONDS = 60.0
QUEUE_GONE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
IDLE_PAUSE_SECONDS = 1.0  # between empty short polls (`wait_seconds: 0`)


class Poller:
    def __init__(
        self,
        name: str,
        settings: QueueSettings,
        dlq: SqsQueue,
        pipeline: Pipeline,
        settler: Settler,
        sources: SourceBook,
        metrics: Metrics,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        polls: anyio.CapacityLimiter | None = None,
        watch: QueueWatch | None = None,
    ) -> None:
        self.name = name
        self._rng = rng or random.Random()
        self._watch = watch  # idle checks, depth gauges, the pause tag (None: receive only)
        self._settings = settings
        self.dlq = dlq
        self._pipeline = pipeline
        self._settler = settler
        self._sources = sources
        self._metrics = metrics
        self._monotonic = monotonic
        self._room = Room(settings.concurrency, settings.receive.batch_size, polls)
        self._receive_scope = anyio.CancelScope()
        self._delivery_scopes: set[anyio.CancelScope] = set()
        self._aborted = False
        self._retention_read = False
        self._receive_failures = 0
        self.last_receive_ok: bool | None = None
        self.stop_when_gone = False  # discovered queues: a deleted queue ends its poller
        self.last_progress = monotonic()
        self.done = anyio.Event()
        self._log = log.bind(queue=name)

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as batches:
                task_status.started()
                with self._receive_scope:
                    while True:
                        await self._cycle(batches)
        finally:
            self.done.set()

    async def _cycle(self, batches: TaskGroup) -> None:
        watch = self._watch
        if watch is not None:
            try:
                if await watch.hold(self.beat, self._check_ok):
                    return
            except Exception as exc:  # noqa: BLE001 - a failed check is a failed receive
                await self._receive_failed(exc)
                return
        received = await self._receive_cycle(batches)
        if received is not None and watch is not None:
            watch.received(received)
        if not received and self._settings.receive.wait_seconds == 0:
            await anyio.sleep(IDLE_PAUSE_SECONDS)

    def _check_ok(self) -> None:
        self.last_receive_ok = True
        self._receive_failures = 0
        self.beat()

    def notes(self) -> list[str]:
        """What is degraded or paused on this queue without failing (`/readyz?verbose`)."""
        notes = [self._sources.note] if self._sources.note else []
        pause = self._watch.pause if self._watch is not None else None
        return notes + (pause.notes() if pause is not None else [])

    def stop_receiving(self) -> None:
        self._receive_scope.cancel()

    def abort(self) -> None:
        """Cancel deliveries in progress; their messages are released, not lost."""
        self._aborted = True
        self.stop_receiving()
        for scope in list(self._delivery_scopes):
            scope.cancel()

    async def run_once(self) -> int:
        """One receive and the full processing of what it returned (for tests and tools)."""
        async with anyio.create_task_group() as batches:
            received = await self._receive_cycle(batches)
        return received or 0

    # -- receiving -------------------------------------------------------------------------

    def beat(self, waiting: float = 0.0) -> None:
        """Liveness: this loop is making progress, or waits on purpose for `waiting` seconds
        (an idle queue's long wait is one timer, not a wake-up every few seconds)."""
        self.last_progress = self._monotonic() + waiting

    async def _receive_cycle(self, batches: TaskGroup) -> int | None:
        """One receive (None: none was made) and its batch started."""
        receive = self._settings.receive
        guard = self._pipeline.guard
        await guard.wait_until_permitted(self.beat)
        taken = await self._room.take(self.beat)
        limit = guard.receive_limit()
        if limit is not None and limit < taken:  # half-open: receive only the probes
            self._room.give(taken - limit)
            taken = limit
        if taken == 0:
            return None
        # The first receive is a short poll, so readiness does not wait out an empty long poll.
        wait = receive.wait_seconds if self.last_receive_ok is not None else 0
        try:
            async with self._room.poll_slot(self.beat):
                raw = await self.dlq.receive(taken, wait, receive.visibility_timeout_seconds)
        except Exception as exc:  # noqa: BLE001 - an outage must not kill the process
            self._room.give(taken)
            await self._receive_failed(exc)
            return None
        received_at = self._monotonic()
        self._room.give(taken - len(raw))
        self.last_receive_ok = True
        self.beat()
        self._receive_failures = 0
        self._metrics.receive_requests.labels(self.name, "messages" if raw else "empty").inc()
        if raw:
            self._metrics.received.labels(self.name).inc(len(raw))
            self._metrics.inflight.labels(self.name).inc(len(raw))
            batches.start_soon(self._handle_batch, raw, received_at)
        return len(raw)

    async def _receive_failed(self, exc: Exception) -> None:
        self.last_receive_ok = False
        self._receive_failures += 1
        code = error_code(exc)
        self._metrics.receive_requests.labels(self.name, "error").inc()
        self._metrics.aws_errors.labels("sqs", "ReceiveMessage", metric_code(code)).inc()
        # Equal jitter: queues and replicas that failed together do not retry in lockstep.
        ceiling = min(RECEIVE_BACKOFF_MAX_SECONDS, 0.5 * 2 ** (self._receive_failures - 1))
        delay = round(ceiling / 2 + self._rng.uniform(0, ceiling / 2), 3)
        if self.stop_when_gone and code in QUEUE_GONE_CODES:
            self._log.info("queue_gone", error=code)
            self.stop_receiving()
            return
        self._log.warning("receive_failed", error=code, kind=kind_of(code).value, retry_in=delay)
        await anyio.sleep(delay)
        self.beat()

    # -- one received batch ----------------------------------------------------------------

    async def _handle_batch(self, raw: Sequence[dict[str, Any]], received_at: float) -> None:
        messages = [parse_message(r) for r in raw]
        decisions: list[Decision] | None = None
        crashed = False
        scope = anyio.CancelScope()
        self._delivery_scopes.add(scope)
        if self._aborted:
            scope.cancel()
        try:
            with scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._heartbeat, messages, received_at)
                    await self._sources.learn(messages)
                    await self._read_retention()
                    decisions = await self._pipeline.run(messages)
                    tg.cancel_scope.cancel()
        except Exception:  # noqa: BLE001 - logged; the batch is kept, not lost
            self._log.exception("batch_failed", messages=len(messages))
            crashed = True
        finally:
            self._delivery_scopes.discard(scope)
            self._room.give(len(messages))
        if decisions is None:
            # Aborted: hand the messages back at once. Crashed: back off, so a bug cannot
            # spin on the same messages.
            outcome = Retry(CRASH_RETRY_SECONDS, "InternalError") if crashed else Release()
            decisions = [Decision(m, 0, outcome) for m in messages]
        with anyio.CancelScope(shield=True), anyio.move_on_after(SETTLE_DEADLINE_SECONDS):
            try:
                await self._settler.settle(decisions, received_at)
            except Exception:  # noqa: BLE001 - logged; unsettled messages reappear
                self._log.exception("settle_failed", messages=len(messages))
        self._metrics.inflight.labels(self.name).dec(len(messages))
        self.beat()

    async def _read_retention(self) -> None:
        """The DLQ's retention, read with the first batch, for the expiry guard."""
        if self._retention_read:
            return
        self._retention_read = True
        try:
            self._pipeline.retention_seconds = await retention_seconds(
                self.dlq.client, self.dlq.url
            )
        except Exception as exc:  # noqa: BLE001 - costs the expiry guard only; said once
            self._log.warning("retention_unreadable", error=error_code(exc), expiry_guard="off")

    async def _heartbeat(self, messages: Sequence[DlqMessage], received_at: float) -> None:
        """Extend the lease at half its length while the batch is in delivery."""
        lease = self._settings.receive.visibility_timeout_seconds
        while True:
            await anyio.sleep(lease / 2)
            left = VISIBILITY_LIMIT_SECONDS - (self._monotonic() - received_at) - 1
            extension = min(lease, math.floor(left))
            if extension <= 0:
                return
            receipts = {m.message_id: (m.receipt_handle, extension) for m in messages}
            failed = await self.dlq.change_visibility(receipts)
            self._log.debug("lease_extended", seconds=extension, failed=len(failed))
