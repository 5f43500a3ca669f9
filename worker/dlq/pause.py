"""Pause through the DLQ's tag (SPEC.md, Pause), as the queue loop reads it (the tag itself:
`worker.aws.attributes`).

Read with ListQueueTags only right before a receive and at most once per interval, so a pause
reaches every replica within ~30 s, survives restarts, shows in the AWS console, and an admin
endpoint is not needed. A tag that cannot be read (a missing permission) leaves the last known
state in force and is said once, in the log and in `/readyz?verbose`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from worker.aws.attributes import read_pause
from worker.aws.clients import Client
from worker.aws.errors import error_code

log = structlog.get_logger("worker.dlq.pause")

CHECK_INTERVAL_SECONDS = 30.0


class PauseWatch:
    def __init__(
        self,
        client: Client,
        url: str,
        *,
        interval: float | None = None,  # CHECK_INTERVAL_SECONDS
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._url = url
        self._interval = CHECK_INTERVAL_SECONDS if interval is None else interval
        self._clock = clock
        self._checked_at: float | None = None
        self.paused = False
        self.note: str | None = None  # the pause's time and reason, from the note tag
        self.unreadable: str | None = None  # why the tag could not be read

    def due_in(self) -> float:
        """Seconds until the tag may be read again."""
        if self._checked_at is None:
            return 0.0
        return max(0.0, self._checked_at + self._interval - self._clock())

    async def check(self, queue: str) -> bool:
        """Whether the queue is paused, reading the tag if the last read is old enough."""
        if self.due_in() > 0:
            return self.paused
        self._checked_at = self._clock()
        try:
            tag = await read_pause(self._client, self._url)
        except Exception as exc:  # noqa: BLE001 - the last known state stays in force
            code = error_code(exc)
            if self.unreadable != code:
                log.warning("pause_tag_unreadable", queue=queue, error=code)
            self.unreadable = code
            return self.paused
        self.unreadable = None
        if tag.paused != self.paused:
            event = "queue_paused" if tag.paused else "queue_resumed"
            log.warning(event, queue=queue, note=tag.note)
        self.paused, self.note = tag.paused, tag.note
        return tag.paused

    def notes(self) -> list[str]:
        notes = []
        if self.paused:
            notes.append(f"paused ({self.note})" if self.note else "paused")
        if self.unreadable:
            notes.append(f"pause tag unreadable ({self.unreadable}): last known state kept")
        return notes
