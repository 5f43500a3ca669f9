"""The per-queue poller: receive → start a `Batch` for what came back → receive again.

Concurrency and turns to poll come from its `Room`; the receive asks only for what fits, and
nothing while the target's breaker admits nothing. Between receives its `QueueWatch` does the
idle checks, depth gauges and pause tag. Shutdown: `stop_receiving()`, then batches finish;
`abort()` cancels deliveries and releases their messages (visibility 0).

A backlog: with one receive in flight, a region's round trip sets the pace, not the CPU. So
each full receive adds one more receive in flight (a "surge" receiver, long-polling for
`SURGE_WAIT_SECONDS`), up to the queue's `concurrency / batch_size`, while the room, a poll
slot and the target's bucket and breaker keep up. A surge receiver ends at its first receive
that is not full (the queue is running dry, or room or target is the limit), when the loop
holds (idle, paused) or the breaker stops admitting everything; the loop's own long poll
carries on, so idle handling is unchanged.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from worker.aws.errors import error_code, kind_of, metric_code
from worker.aws.facts import DlqFacts
from worker.aws.sqs import QUEUE_GONE_CODES, SqsQueue
from worker.core.envelope import DlqMessage, parse_message
from worker.dlq.batch import Batch
from worker.dlq.failures import ReceiveFailures
from worker.dlq.pipeline import Pipeline
from worker.dlq.room import Room, Taken
from worker.dlq.settle import Settler
from worker.dlq.watch import QueueWatch
from worker.metrics import Metrics, Series
from worker.settings import QueueSettings
from worker.targets.guard import Guard

log = structlog.get_logger("worker.dlq.poller")

IDLE_PAUSE_SECONDS = 1.0  # between empty short polls (`wait_seconds: 0`)
# A surge receive long-polls briefly: a short poll samples only some of SQS's servers and can
# come back short while the queue still has a backlog.
SURGE_WAIT_SECONDS = 1


class Poller:
    def __init__(
        self,
        name: str,
        settings: QueueSettings,
        dlq: SqsQueue,
        *,
        guard: Guard,
        facts: DlqFacts,
        pipeline: Pipeline,
        settler: Settler,
        metrics: Metrics,
        watch: QueueWatch | None = None,
        polls: anyio.CapacityLimiter | None = None,
        stop_when_gone: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.dlq = dlq
        self._settings = settings
        self._guard = guard
        self._facts = facts
        self._pipeline = pipeline
        self._settler = settler
        self._metrics = metrics
        self._series = Series()
        self._watch = watch  # idle checks, depth gauges, the pause tag (None: receive only)
        self._room = Room(settings.concurrency, settings.receive.batch_size, polls)
        self._stop_when_gone = stop_when_gone  # discovered queues: a deleted queue ends it
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self._receive_scope = anyio.CancelScope()
        self._surge: TaskGroup | None = None  # where surge receivers run (None: no surge)
        self._surging = 0  # surge receivers running
        self._surge_max = settings.concurrency // settings.receive.batch_size - 1
        self._batches: set[Batch] = set()
        self._aborted = False
        self.last_receive_ok: bool | None = None
        self._failures = ReceiveFailures(name, metrics, self._rng)
        self.last_progress = monotonic()
        self.done = anyio.Event()
        self._log = log.bind(queue=name)

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as batches:
                task_status.started()
                with self._receive_scope:
                    async with anyio.create_task_group() as surge:
                        self._surge = surge
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
        self._failures.worked()
        self.beat()

    def notes(self) -> list[str]:
        """What is degraded or paused on this queue without failing (`/readyz?verbose`)."""
        notes = [self._facts.note] if self._facts.note else []
        if (failing := self._failures.note()) is not None:
            notes.append(failing)
        pause = self._watch.pause if self._watch is not None else None
        return notes + (pause.notes() if pause is not None else [])

    def stop_receiving(self) -> None:
        self._receive_scope.cancel()

    def abort(self) -> None:
        """Cancel deliveries in progress; their messages are released, not lost."""
        self._aborted = True
        self.stop_receiving()
        for batch in list(self._batches):
            batch.abort()

    async def run_once(self) -> int:
        """One receive and the full processing of what it returned (for tests and tools)."""
        async with anyio.create_task_group() as batches:
            received = await self._receive_cycle(batches)
        return received or 0

    # -- receiving -------------------------------------------------------------------------

    @property
    def _held(self) -> bool:
        """The loop holds (idle, or paused as soon as the tag says so): surge receivers stop."""
        return self._watch is not None and self._watch.holding

    def beat(self, waiting: float = 0.0) -> None:
        """Liveness: this loop is making progress, or waits on purpose for `waiting` seconds
        (an idle queue's long wait is one timer, not a wake-up every few seconds)."""
        self.last_progress = self._monotonic() + waiting

    async def _receive_cycle(self, batches: TaskGroup, *, surge: bool = False) -> int | None:
        """One receive (None: none was made) and its batch started; a full one widens."""
        receive = self._settings.receive
        await self._guard.wait_until_permitted(self.beat)
        # While surge receivers run, every receive waits for a whole batch of room: receivers
        # sharing the room out in slivers would each receive a few messages for a request's
        # price.
        room = self._room
        whole = surge or self._surging > 0
        taken = await (room.take_whole(self.beat) if whole else room.take(self.beat))
        limit = self._guard.receive_limit()
        if limit is not None and limit < taken.count:  # half-open: receive only the probes
            taken.keep(limit)
        if taken.count == 0:
            return None
        if surge and self._held:  # paused (or idle) while this receiver waited for room
            taken.end()
            return None
        # The first receive is a short poll, so readiness does not wait out an empty long poll.
        wait = receive.wait_seconds if self.last_receive_ok is not None else 0
        if surge:
            wait = min(wait, SURGE_WAIT_SECONDS)
        try:
            async with self._room.poll_slot(self.beat):
                raw = await self.dlq.receive(taken.count, wait, receive.visibility_timeout_seconds)
        except BaseException as exc:  # an outage must not kill the process
            taken.end()  # nothing was received: the room goes back
            if not isinstance(exc, Exception):
                raise  # cancelled: stopping
            await self._receive_failed(exc)
            return None
        received_at = self._monotonic()
        taken.keep(min(len(raw), taken.count))  # SQS never gives more than asked
        self._check_ok()
        m, series = self._metrics, self._series
        series(m.receive_requests, self.name, "messages" if raw else "empty").inc()
        if raw:
            series(m.received, self.name).inc(len(raw))
            series(m.inflight, self.name).inc(len(raw))
            if limit is not None:
                # Probes (half-open): nothing more is received until their answers are in, or
                # the next receive could take more messages than the breaker lets through.
                answered = anyio.Event()
                batches.start_soon(self._handle, raw, received_at, taken, answered)
                await answered.wait()
            else:
                batches.start_soon(self._handle, raw, received_at, taken)
            if len(raw) == receive.batch_size:
                self._widen(batches)
        return len(raw)

    def _widen(self, batches: TaskGroup) -> None:
        """After a full receive: one more receive in flight, if everything keeps up."""
        size = self._settings.receive.batch_size
        if self._surge is None or self._surging >= self._surge_max or self._held:
            return
        # The target must keep up with what is already received too, not only one batch more.
        if not (self._room.free(size) and self._guard.keeps_up(self._room.busy() + size)):
            return
        self._surging += 1
        self._surge.start_soon(self._surge_receiver, batches)

    async def _surge_receiver(self, batches: TaskGroup) -> None:
        size = self._settings.receive.batch_size
        try:
            while not self._held and self._guard.receive_limit() is None:
                if await self._receive_cycle(batches, surge=True) != size:
                    return
        finally:
            self._surging -= 1

    async def _receive_failed(self, exc: Exception) -> None:
        self.last_receive_ok = False
        code = error_code(exc)
        delay = self._failures.failed(code)
        self._metrics.receive_requests.labels(self.name, "error").inc()
        self._metrics.aws_errors.labels("sqs", "ReceiveMessage", metric_code(code)).inc()
        if self._stop_when_gone and code in QUEUE_GONE_CODES:
            self._log.info("queue_gone", error=code)
            self.stop_receiving()
            return
        self._log.warning(
            "receive_failed", error=code, kind=kind_of(code).value, retry_in=round(delay, 3)
        )
        await anyio.sleep(delay)
        self.beat()

    def _clock_retention(self, messages: Sequence[DlqMessage]) -> None:
        retention = self._facts.retention_seconds
        if retention is None:
            return
        try:
            left = self._facts.time_left(messages, time.time())
            self._metrics.retention.observe(self.name, retention, left)
        except Exception:  # noqa: BLE001 - a gauge never costs a batch its messages
            self._log.exception("retention_clock_failed")

    async def _handle(
        self,
        raw: Sequence[dict[str, Any]],
        received_at: float,
        taken: Taken,
        done: anyio.Event | None = None,
    ) -> None:
        batch = Batch(
            [parse_message(r) for r in raw],
            received_at,
            dlq=self.dlq,
            facts=self._facts,
            pipeline=self._pipeline,
            settler=self._settler,
            lease_seconds=self._settings.receive.visibility_timeout_seconds,
            taken=taken,
            log=self._log,
            monotonic=self._monotonic,
            learned=self._clock_retention,
        )
        self._batches.add(batch)
        if self._aborted:
            batch.abort()
        try:
            await batch.run()
        finally:
            self._batches.discard(batch)
            if done is not None:
                done.set()
        self._series(self._metrics.inflight, self.name).dec(len(raw))
        self.beat()
