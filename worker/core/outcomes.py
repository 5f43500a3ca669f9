"""What happened to one message (its outcome) and the settlement that records it: small frozen
values. Only the queue loop's settlement turns them into SQS calls, metrics and logs.

`Park` is the hook API's own (`worker.hooks`): one class for parking, decided or happened.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.core.envelope import DlqMessage
from worker.core.errors import DeliveryError
from worker.hooks import Park

__all__ = ["Delivered", "Outcome", "Park", "Release", "Retry", "Settlement"]


@dataclass(frozen=True)
class Delivered:
    """The target accepted the message: delete it from the DLQ."""


@dataclass(frozen=True)
class Retry:
    """Try again after `delay` seconds (the message's next visibility timeout)."""

    delay: float
    error: str


@dataclass(frozen=True)
class Release:
    """Not tried: make the message visible again at once. `reason`: `shutdown`, or
    `waiting_for_group` (a FIFO message behind a failed one of its group; SQS returns it
    only after that one), or `lease_lapsed` (a FIFO message whose lease may have run out:
    left alone, another receive may hold it)."""

    reason: str = "shutdown"


Outcome = Delivered | Retry | Park | Release


@dataclass(frozen=True)
class Settlement:
    """One message's outcome, with what settlement records of the delivery."""

    message: DlqMessage
    attempt: int  # attempts made, counting this one if a delivery was tried
    outcome: Outcome
    error: DeliveryError | None = None  # the delivery's failure, if one was tried and failed
    duration: float | None = None  # seconds the target took, if a delivery was tried
