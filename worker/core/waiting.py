"""Receives that were not tries (pure): a FIFO message handed back untried because an earlier
message of its group failed.

SQS counts every receive, so without this a message that waited behind a failing one would run
out of attempts without ever being tried. The count lives in one process and is bounded: after
a restart, or for the oldest of more than `max_messages` waiting messages, those receives count
as attempts again (the safe side for a message that keeps failing; documented).
"""

from __future__ import annotations

from collections import OrderedDict

MAX_WAITING_MESSAGES = 100_000


class WaitLedger:
    def __init__(self, *, max_messages: int = MAX_WAITING_MESSAGES) -> None:
        self._max = max_messages
        self._untried: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._untried)

    def untried(self, message_id: str) -> int:
        """How many receives of this message were hand-backs, not tries."""
        return self._untried.get(message_id, 0)

    def handed_back(self, message_id: str) -> None:
        self._untried[message_id] = self._untried.get(message_id, 0) + 1
        self._untried.move_to_end(message_id)
        while len(self._untried) > self._max:
            self._untried.popitem(last=False)

    def forget(self, message_id: str) -> None:
        """The message left its DLQ (delivered or parked)."""
        self._untried.pop(message_id, None)
