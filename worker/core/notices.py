"""What the queue loop tells the notifier (SPEC.md, Notifications): plain calls that return at
once. The loop never waits on a sink; `worker.notify` digests and sends elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Notices(Protocol):
    def parked(
        self, queue: str, reason: str, error: str, error_type: str | None, message_id: str
    ) -> None:
        """One message parked (`message_id`: the parked copy's, what an operator acts on)."""

    def received(self, queue: str, message_ids: Sequence[str]) -> None:
        """Messages the DLQ received that are new to it (their first attempt)."""


class NoNotices:
    """No `notify:` sinks: nothing to tell."""

    def parked(
        self, queue: str, reason: str, error: str, error_type: str | None, message_id: str
    ) -> None:
        pass

    def received(self, queue: str, message_ids: Sequence[str]) -> None:
        pass
