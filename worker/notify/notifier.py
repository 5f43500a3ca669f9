"""The notifier (SPEC.md, Notifications): the queue loop's notices in, digests out.

`parked` and `received` are plain calls that count and return: the loop never waits on a sink.
A ticker closes the windows that are due and hands each digest to every sink's bounded queue
(full: the digest is dropped for that sink, counted). One task a sink sends them in order,
each tried `attempts` times with backoff (a sink's Retry-After honoured, capped); a sink that
keeps failing is logged once a window, not once a digest. At shutdown the open windows are
closed at once and the sinks get a few seconds to send them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from worker.core.notices import ParkedNotice
from worker.metrics import Metrics
from worker.notify.digest import Digests
from worker.notify.sinks import DigestSink, SinkFailed
from worker.settings.notify import NotifySettings

log = structlog.get_logger("worker.notify.notifier")

TICK_SECONDS = 1.0
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
FLUSH_SECONDS = 5.0  # at shutdown: how long the sinks get for the last digests
FLUSH_BACKOFF_SECONDS = 0.5  # and the longest wait before a retry then
# Between two sends to one sink (Slack takes about one message a second on a webhook): a
# thousand kinds of failure closing at once are paced, not fired at the sink.
SEND_INTERVAL_SECONDS = 1.0
# A sink that refused for good (a 403, a missing topic) is not called for a window, but at
# most this long: IAM's eventual consistency at boot must not silence it for a day
SINK_DOWN_MAX_SECONDS = 300.0
OUTCOMES = ("sent", "retried", "failed", "dropped")


class Notifier:
    def __init__(
        self,
        settings: NotifySettings,
        sinks: Sequence[DigestSink],
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._settings = settings
        self._sinks = list(sinks)
        self._metrics = metrics
        self._clock = clock
        self._digests = Digests(
            window_seconds=settings.window_seconds,
            quiet_seconds=settings.quiet_seconds,
            events=settings.events,
            console_url=settings.console_url,
            started=clock(),
            wall=wall,
            said=settings.error_messages,
        )
        # each sink's bounded queue of digests, while `run` runs
        self._outboxes: list[MemoryObjectSendStream[dict[str, Any]]] = []
        self._last_said: dict[int, float] = {}  # sink index -> when its failure was last logged
        # sink index -> until when it is not called: the sink itself refused for good (a
        # 404, a denied permission; not one digest refused): the digests meanwhile are
        # counted failed, not sent to be refused again
        self._dead_until: dict[int, float] = {}
        for sink in sinks:  # every series from 0: the alert sees the first failure
            for outcome in OUTCOMES:
                metrics.notifications.labels(sink.kind, outcome)
        self._flushing = False  # at shutdown: no pacing, the time is short
        self._sleep = sleep
        self.finished = anyio.Event()  # set once `run` has ended

    # -- notices: counted, never waited on --------------------------------------------------

    def parked(self, notice: ParkedNotice) -> None:
        self._digests.parked(notice, self._clock())

    def received(self, queue: str, message_ids: Sequence[str]) -> None:
        self._digests.received(queue, message_ids, self._clock())

    # -- digests out ------------------------------------------------------------------------

    async def run(self, stop: anyio.Event) -> None:
        """Until `stop`: close due windows each tick; then close every window and give the
        sinks FLUSH_SECONDS to send what is queued."""
        try:
            await self._run(stop)
        finally:
            self.finished.set()

    async def _run(self, stop: anyio.Event) -> None:
        size = self._settings.queue_size
        queues = []
        async with anyio.create_task_group() as tg:
            for index, sink in enumerate(self._sinks):
                send, receive = anyio.create_memory_object_stream[dict[str, Any]](size)
                self._outboxes.append(send)
                queues.append(receive)
                tg.start_soon(self._send_all, index, sink, receive)
            while not stop.is_set():
                with anyio.move_on_after(TICK_SECONDS):
                    await stop.wait()
                self._hand_out(self._digests.due(self._clock()))
            self._flushing = True
            self._hand_out(self._digests.due(self._clock(), everything=True))
            for send in self._outboxes:
                send.close()  # each sender ends once its queue is empty
            tg.cancel_scope.deadline = anyio.current_time() + FLUSH_SECONDS
        for sink, left in zip(self._sinks, queues, strict=True):  # the flush ran out of time
            unsent = left.statistics().current_buffer_used
            if unsent:
                self._metrics.notifications.labels(sink.kind, "dropped").inc(unsent)

    def _hand_out(self, digests: list[dict[str, Any]]) -> None:
        for digest in digests:
            for index, sink in enumerate(self._sinks):
                try:
                    self._outboxes[index].send_nowait(digest)
                except anyio.WouldBlock:
                    self._counted(sink, "dropped")

    async def _send_all(
        self, index: int, sink: DigestSink, digests: MemoryObjectReceiveStream[dict[str, Any]]
    ) -> None:
        async with digests:
            async for digest in digests:
                if self._clock() < self._dead_until.get(index, -math.inf):
                    self._counted(sink, "failed")
                    continue
                await self._send_one(index, sink, digest)
                if not self._flushing:
                    await self._sleep(SEND_INTERVAL_SECONDS)

    async def _send_one(self, index: int, sink: DigestSink, digest: dict[str, Any]) -> None:
        try:
            await self._tries(index, sink, digest)
        except anyio.get_cancelled_exc_class():
            self._counted(sink, "dropped")  # the flush ran out while it was being sent
            raise

    async def _tries(self, index: int, sink: DigestSink, digest: dict[str, Any]) -> None:
        delay = BACKOFF_FIRST_SECONDS
        for attempt in range(1, self._settings.attempts + 1):
            failure = await self._try(sink, digest)
            if failure is None:
                self._counted(sink, "sent")
                log.info(
                    "digest_sent",
                    sink=sink.kind,
                    notice=digest["event"],
                    queue=digest["queue"],
                    count=digest["count"],
                )
                return
            if not failure.retryable or attempt == self._settings.attempts:
                self._counted(sink, "failed")
                self._say_failed(index, sink, failure, digest)
                if failure.sink_down:
                    quiet = min(self._settings.window_seconds, SINK_DOWN_MAX_SECONDS)
                    self._dead_until[index] = self._clock() + quiet
                return
            self._counted(sink, "retried")
            # at shutdown, a short wait: a long one would only be cut off by the flush
            most = FLUSH_BACKOFF_SECONDS if self._flushing else BACKOFF_MAX_SECONDS
            await self._sleep(min(max(delay, failure.retry_after or 0), most))
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)

    async def _try(self, sink: DigestSink, digest: dict[str, Any]) -> SinkFailed | None:
        """One send; its failure, if it failed (a sink never stops the notifier)."""
        try:
            with anyio.fail_after(self._settings.timeout_seconds):
                await sink.send(digest)
        except SinkFailed as exc:
            return exc
        except TimeoutError:
            return SinkFailed("Timeout", retryable=True)
        except Exception as exc:  # noqa: BLE001 - e.g. a parameter AWS refuses: not retried
            return SinkFailed(type(exc).__name__, retryable=False)
        return None

    def _counted(self, sink: DigestSink, outcome: str) -> None:
        self._metrics.notifications.labels(sink.kind, outcome).inc()

    def _say_failed(
        self, index: int, sink: DigestSink, failure: SinkFailed, digest: dict[str, Any]
    ) -> None:
        now = self._clock()
        last = self._last_said.get(index, -math.inf)
        if now - last < self._settings.window_seconds:
            return  # said once a window
        self._last_said[index] = now
        log.error(
            "notification_failed",
            sink=sink.kind,
            error=str(failure),
            notice=digest["event"],
            queue=digest["queue"],
            outcome="dropped",
            hint="digests to this sink are counted in retry_worker_notifications_total",
        )
