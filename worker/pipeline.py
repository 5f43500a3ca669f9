"""The per-message pipeline: envelope → gate → deliver → classify → decision.

It returns outcome values; it never touches the DLQ itself.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from worker.core.envelope import DlqMessage
from worker.core.errors import DeliveryError
from worker.core.loopguard import LoopGuard, fingerprint
from worker.core.outcomes import Delivered, Outcome, Park, Retry
from worker.core.policy import attempt_number, gate, on_failure
from worker.guard import Guard
from worker.settings import PolicySettings
from worker.targets.base import Delivery, Target


@dataclass(frozen=True)
class Decision:
    message: DlqMessage
    attempt: int  # attempts made, counting this one if a delivery was tried
    outcome: Outcome
    error: DeliveryError | None = None  # the delivery's failure, if one was tried and failed
    duration: float | None = None  # seconds the target took, if a delivery was tried


class Pipeline:
    def __init__(
        self,
        policy: PolicySettings,
        target: Target,
        guard: Guard,
        arrived_with: Callable[[DlqMessage], int],
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        retention_seconds: float | None = None,
        loops: LoopGuard | None = None,
        loop_key: str = "",
    ) -> None:
        self.policy = policy
        self.target = target
        self.guard = guard
        self._arrived_with = arrived_with
        self._clock = clock
        self._rng = rng or random.Random()
        self.retention_seconds = retention_seconds  # the DLQ's MessageRetentionPeriod
        self._loops = loops
        self._loop_key = loop_key or target.name

    def _looping(self, message: DlqMessage) -> Park | None:
        """A payload that keeps coming back as new DLQ messages through a hand-off target."""
        if self._loops is None or not self.target.loops_back(message):
            return None
        key = fingerprint(self._loop_key, message.body)
        if self._loops.observe(key, message.message_id) >= self.policy.max_attempts:
            return Park("loop_detected", "LoopDetected")
        return None

    async def run(self, messages: Sequence[DlqMessage]) -> list[Decision]:
        now = self._clock()
        decided: dict[int, Decision] = {}
        to_deliver: list[tuple[int, Delivery]] = []
        for index, message in enumerate(messages):
            attempt = attempt_number(message, self._arrived_with(message))
            parked: Park | None = gate(message, attempt, self.policy, now) or self._looping(message)
            if parked:
                decided[index] = Decision(message, attempt - 1, parked)
            else:
                to_deliver.append((index, Delivery(message, attempt)))
        admitted = await self.guard.admit(len(to_deliver)) if to_deliver else 0
        for index, delivery in to_deliver[admitted:]:
            # The breaker opened after this batch was received: not a try, come back later.
            refused = Retry(self.guard.retry_delay(), "CircuitOpen")
            decided[index] = Decision(delivery.message, delivery.attempt - 1, refused)
        to_deliver = to_deliver[:admitted]
        if to_deliver:
            started = time.monotonic()
            results = await self.target.deliver([d for _, d in to_deliver])
            duration = time.monotonic() - started
            now = self._clock()
            for (index, delivery), error in zip(to_deliver, results, strict=True):
                self.guard.record(error)
                outcome: Outcome = Delivered()
                if error is not None:
                    outcome = on_failure(
                        error,
                        delivery.attempt,
                        delivery.message,
                        self.policy,
                        now,
                        self._rng,
                        self.retention_seconds,
                    )
                decided[index] = Decision(
                    delivery.message, delivery.attempt, outcome, error, duration
                )
        return [decided[i] for i in range(len(messages))]
