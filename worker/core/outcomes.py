"""What the pipeline decided for one message: small frozen values.

Only the poller turns them into SQS calls, metrics and logs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Delivered:
    """The target accepted the message: delete it from the DLQ."""


@dataclass(frozen=True)
class Retry:
    """Try again after `delay` seconds (the message's next visibility timeout)."""

    delay: float
    error: str


@dataclass(frozen=True)
class Park:
    """Give up: write to the parking queue with the reason, then delete from the DLQ."""

    reason: str
    error: str = ""


@dataclass(frozen=True)
class Release:
    """Not tried: make the message visible again at once. `reason`: `shutdown`, or
    `waiting_for_group` (a FIFO message behind a failed one of its group; SQS returns it
    only after that one)."""

    reason: str = "shutdown"


Outcome = Delivered | Retry | Park | Release
