"""What the queue loop tells the notifier (SPEC.md, Notifications): plain calls that return at
once. The loop never waits on a sink; `worker.notify` digests and sends elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ParkedNotice:
    """One message parked: why, and what the target said of its last failure."""

    queue: str
    reason: str
    error: str  # the code
    message_id: str  # the parked copy's: what an operator acts on
    error_type: str | None = None
    error_message: str | None = None


class Notices(Protocol):
    def parked(self, notice: ParkedNotice) -> None:
        """One message parked."""

    def received(self, queue: str, message_ids: Sequence[str]) -> None:
        """Messages the DLQ received that are new to it (their first attempt)."""
