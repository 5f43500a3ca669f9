"""A verdict: a message's decision and who made it, and what the queue's policy makes of it
(pure): the same mapping in the daemon's pipeline and in `explain`.

One vocabulary from the hook API to settlement:
- a **decision** is what a rule, the transform or the hook decides before delivery: `Deliver`,
  `Defer` or `Park` (`worker.hooks`, the public API);
- a **verdict** is a message's decision with who made it (`by`, `rule`) and its idempotency
  key; or, with no decision, the retryable failure of deciding (a hook that raised);
- an **outcome** is what happened (`worker.core.outcomes`: `Delivered`, `Retry`, `Park`,
  `Release`), and a **settlement** is a message's outcome as the queue settles it. `Park` is
  one class, as a decision and as an outcome.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from worker.core.envelope import DlqMessage
from worker.core.errors import DeliveryError
from worker.core.outcomes import Retry
from worker.core.policy import later, on_failure
from worker.hooks import Decision, Defer, Deliver, Park
from worker.settings import PolicySettings

Action = Literal["deliver", "defer", "park", "failed"]
By = Literal["rule", "transform", "hook", "default"]
DEFERRED = "Deferred"  # the error code of a deferral (a message parked after its last one)


@dataclass(frozen=True)
class Verdict:
    decision: Decision | None  # None: deciding failed (`failure`), a retryable error
    by: By
    rule: int | None = None  # the index of the rule that decided
    key: str | None = None  # deliver: the queue's idempotency key for the message, if it has one
    failure: DeliveryError | None = None

    @property
    def action(self) -> Action:
        """The decision's name (a metric label, a log field, `explain`'s `action`)."""
        match self.decision:
            case Deliver():
                return "deliver"
            case Defer():
                return "defer"
            case Park():
                return "park"
        return "failed"

    @property
    def payload(self) -> str | None:
        """deliver: the text to deliver, when not the message's own."""
        return self.decision.payload if isinstance(self.decision, Deliver) else None


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
    a failed decision is a retryable failure of this attempt."""
    match verdict.decision:
        case Deliver():
            return None
        case Park() as park:
            return attempt - 1, park
        case Defer(seconds=seconds):
            return attempt, later(
                seconds, DEFERRED, attempt, message, policy, now, retention_seconds
            )
    assert verdict.failure is not None
    return attempt, on_failure(
        verdict.failure, attempt, message, policy, now, rng, retention_seconds
    )
