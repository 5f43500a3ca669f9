"""A decision's verdict, and what the queue's policy makes of it (pure): the same mapping in
the daemon's pipeline and in `explain`."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from worker.core.envelope import DlqMessage
from worker.core.errors import DeliveryError
from worker.core.outcomes import Park, Retry
from worker.core.policy import later, on_failure
from worker.settings import PolicySettings

Action = Literal["deliver", "defer", "park", "failed"]
By = Literal["rule", "transform", "hook", "default"]
DEFERRED = "Deferred"  # the error code of a deferral (a message parked after its last one)


@dataclass(frozen=True)
class Verdict:
    action: Action  # failed: the hook failed (`failure`), a retryable error
    by: By
    payload: str | None = None  # deliver: the text to deliver, when not the message's own
    delay: float = 0.0  # defer
    reason: str = ""  # park, defer
    error: str = ""  # park: the error code parked with
    failure: DeliveryError | None = None
    rule: int | None = None  # the index of the rule that decided
    key: str | None = None  # deliver: the queue's idempotency key for the message, if it has one


def settled_as(
    verdict: Verdict,
    attempt: int,
    message: DlqMessage,
    policy: PolicySettings,
    now: float,
    rng: random.Random,
    retention_seconds: float | None = None,
) -> tuple[int, Retry | Park] | None:
    """(attempts made, outcome) for a verdict that is not a delivery; None: deliver. A park
    tried nothing; a deferral counts as an attempt (parked after the last one, like any retry);
    a failed hook is a retryable failure of this attempt."""
    match verdict.action:
        case "deliver":
            return None
        case "park":
            return attempt - 1, Park(verdict.reason, verdict.error)
        case "defer":
            return attempt, later(
                verdict.delay, DEFERRED, attempt, message, policy, now, retention_seconds
            )
    assert verdict.failure is not None
    return attempt, on_failure(
        verdict.failure, attempt, message, policy, now, rng, retention_seconds
    )
