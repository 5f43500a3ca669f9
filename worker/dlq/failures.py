"""A queue's failing receives: how many in a row, the last code, the pause before the next
(backoff: never a hot loop), what `/readyz?verbose` says of them and the missing-queue gauge."""

from __future__ import annotations

import random

from worker.aws.sqs import QUEUE_GONE_CODES
from worker.core.policy import failure_pause
from worker.metrics import Metrics

RECEIVE_BACKOFF_FIRST_SECONDS = 0.5
RECEIVE_BACKOFF_MAX_SECONDS = 30.0


class ReceiveFailures:
    def __init__(self, queue: str, metrics: Metrics, rng: random.Random) -> None:
        self._queue = queue
        self._metrics = metrics
        self._rng = rng
        self.count = 0  # in a row
        self.code: str | None = None  # the last one's, until a receive works

    def failed(self, code: str) -> float:
        """One more; returns how long to wait before the next receive."""
        self.count += 1
        self.code = code
        gone = code in QUEUE_GONE_CODES
        self._metrics.queue_missing.labels(self._queue).set(1 if gone else 0)
        return failure_pause(
            self.count, RECEIVE_BACKOFF_FIRST_SECONDS, RECEIVE_BACKOFF_MAX_SECONDS, self._rng
        )

    def worked(self) -> None:
        if self.count:
            self._metrics.queue_missing.labels(self._queue).set(0)
            self.count, self.code = 0, None

    def note(self) -> str | None:
        if self.code is None:
            return None
        said = "its DLQ does not exist" if self.code in QUEUE_GONE_CODES else "receives fail"
        return f"{said} ({self.code}, {self.count} in a row; tried again with backoff)"
