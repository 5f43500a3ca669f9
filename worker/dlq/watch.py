"""What a queue loop does between receives: idle checks, the depth gauges, the pause tag.

- Idle (`worker/core/idle.py`): an idle queue is not long-polled; it is checked with one
  GetQueueAttributes at a growing interval, which also feeds the depth gauges. At the
  defaults an idle queue costs 12 billed calls an hour.
- Busy: the depth gauges are refreshed every `metrics.queue_depth_interval_seconds`.
- The pause tag is read only right before a receive (at most every 30 s): an idle queue
  never pays for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import structlog

from worker.aws.attributes import read_depth
from worker.aws.errors import error_code, metric_code
from worker.aws.sqs import SqsQueue
from worker.core.idle import IdleSchedule
from worker.dlq.pause import PauseWatch
from worker.metrics import Metrics, drop

log = structlog.get_logger("worker.dlq.watch")

Beat = Callable[..., None]  # the loop's liveness beat, `beat(waiting=seconds)`


def record_depth(name: str, metrics: Metrics, counts: dict[str, int]) -> None:
    """`visible` always; `in_flight` and `delayed` only while not zero (an idle queue costs one
    series, not three)."""
    for state, value in counts.items():
        if value or state == "visible":
            metrics.queue_messages.labels(name, state).set(value)
        else:
            drop(metrics.queue_messages, name, state)


class QueueWatch:
    def __init__(
        self,
        name: str,
        dlq: SqsQueue,
        metrics: Metrics,
        idle: IdleSchedule,
        *,
        pause: PauseWatch | None = None,
        depth_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._dlq = dlq
        self._metrics = metrics
        self.idle = idle
        self.pause = pause
        self._depth_interval = depth_interval  # 0: no depth gauges
        self._clock = clock
        self._depth_at: float | None = None
        self._checked = False
        # The loop must not receive (idle, or paused): set as soon as it is known, before the
        # wait, so every receiver of the queue stops at once, not after the wait.
        self.holding = False

    async def hold(self, beat: Beat, ok: Callable[[], None]) -> bool:
        """True when the loop must not receive now (idle and still empty, or paused): the
        wait is done here. `ok` is called after a successful check; a failed one raises."""
        if self.idle.enabled and (not self._checked or self.idle.idle):
            if self._checked:
                await self._sleep(self.idle.pause(), beat)
            waiting = await self._check()
            ok()
            self.idle.checked(waiting, first=not self._checked)
            self._checked = True
            if self.idle.idle:
                self.holding = True
                return True
        else:
            await self._refresh_depth()
        return await self._paused(beat)

    def received(self, count: int) -> None:
        self.idle.received(count)

    async def _check(self) -> int:
        counts = await read_depth(self._dlq)
        self._depth_at = self._clock()
        if self._depth_interval > 0:
            record_depth(self._name, self._metrics, counts)
        return sum(counts.values())

    async def _refresh_depth(self) -> None:
        """A busy queue's gauges, on their own cadence; a failure keeps the last values."""
        if self._depth_interval <= 0:
            return
        if self._depth_at is not None and self._clock() - self._depth_at < self._depth_interval:
            return
        self._depth_at = self._clock()
        try:
            record_depth(self._name, self._metrics, await read_depth(self._dlq))
        except Exception as exc:  # noqa: BLE001 - a gauge that cannot refresh keeps its value
            code = error_code(exc)
            self._metrics.aws_errors.labels("sqs", "GetQueueAttributes", metric_code(code)).inc()
            log.warning("queue_depth_failed", queue=self._name, error=code)

    async def _paused(self, beat: Beat) -> bool:
        if self.pause is None:
            self.holding = False
            return False
        self.holding = await self.pause.check(self._name)
        if self.holding:
            self._metrics.paused.labels(self._name).set(1)
            await self._sleep(max(0.1, self.pause.due_in()), beat)
        else:
            drop(self._metrics.paused, self._name)  # absent reads as 0
        return self.holding

    @staticmethod
    async def _sleep(seconds: float, beat: Beat) -> None:
        """One timer for the whole wait: 10,000 idle queues must not wake every few seconds.
        The loop says how long it will wait, so /livez knows it is alive meanwhile."""
        beat(waiting=seconds)
        await anyio.sleep(seconds)
        beat()
