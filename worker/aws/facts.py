"""What the first batch teaches about a DLQ, kept in one place: its redrive sources (which
receive count a message arrived with, and where an SQS redrive goes back to) and its retention
period (for the expiry guard). An idle queue never pays for either."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import anyio
import structlog

from worker.aws.attributes import retention_seconds
from worker.aws.clients import Client
from worker.aws.errors import error_code
from worker.aws.sqs import RedriveSource, redrive_sources
from worker.core.envelope import DlqMessage

log = structlog.get_logger("worker.aws.facts")


# An operator raises a DLQ's retention when its messages run short of it: read it again this
# often (one GetQueueAttributes an hour), not only at start.
RETENTION_REFRESH_SECONDS = 3600.0


class DlqFacts:
    """The DLQ's redrive sources, refreshed when a message names a source we do not know,
    and its retention, read with the first batch and again every hour."""

    def __init__(
        self,
        client: Client,
        dlq_url: str,
        *,
        min_refresh_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._dlq_url = dlq_url
        self._min_refresh = min_refresh_seconds
        self._clock = clock
        self._refreshed_at: float | None = None
        self._retention_read_at: float | None = None
        # Batches run in parallel: one reads, the others wait for what it read (a batch that
        # went on without the sources would count every receive as an attempt).
        self._learning = anyio.Lock()
        self.by_arn: dict[str, RedriveSource] = {}
        self.retention_seconds: float | None = None  # None: unknown, no expiry guard
        self.note: str | None = None  # why attempts are less accurate than they could be

    async def refresh(self) -> None:
        """Read the sources. If they cannot be listed (a missing permission, an emulator
        without the API), the DLQ is served anyway: attempts count from the receive count."""
        self._refreshed_at = self._clock()
        try:
            found = await redrive_sources(self._client, self._dlq_url)
        except Exception as exc:  # noqa: BLE001 - costs attempt accuracy, never the queue
            code = error_code(exc)
            note = f"redrive sources unreadable ({code}): attempts count from the receive count"
            if note != self.note:  # once per kind of failure, not per refresh
                log.warning("redrive_sources_unreadable", dlq=self._dlq_url, error=code)
            self.note = note
            return
        self.note = None
        # Keep the same dict object: targets hold a reference to it.
        self.by_arn.clear()
        self.by_arn.update(found)
        log.info("redrive_sources", dlq=self._dlq_url, sources=sorted(found))

    async def learn(self, messages: Sequence[DlqMessage]) -> None:
        """Read the sources and the retention with the first batch; the sources again when a
        message names one we do not know (at most every minute), the retention every hour.
        A batch that comes while another reads waits for that read."""
        async with self._learning:
            if self._refreshed_at is None or (
                self._clock() - self._refreshed_at >= self._min_refresh
                and any(m.source_arn and m.source_arn not in self.by_arn for m in messages)
            ):
                await self.refresh()
            if self._retention_read_at is None or (
                self._clock() - self._retention_read_at >= RETENTION_REFRESH_SECONDS
            ):
                await self._read_retention()

    async def _read_retention(self) -> None:
        self._retention_read_at = self._clock()
        try:
            self.retention_seconds = await retention_seconds(self._client, self._dlq_url)
        except Exception as exc:  # noqa: BLE001 - costs the expiry guard only; said once
            log.warning(
                "retention_unreadable", dlq=self._dlq_url, error=error_code(exc), expiry_guard="off"
            )

    def verified(self, message: DlqMessage) -> DlqMessage:
        """The message with the source our marker names as its `source_arn`, when SQS named
        none and the marker names one of the DLQ's redrive sources (anyone who can send to
        the DLQ can write the marker): rules, hooks, targets and parking then all see the
        same, checked source."""
        if message.source_arn or message.carried_source not in self.by_arn:
            return message
        return dataclasses.replace(message, source_arn=message.carried_source)

    def arrived_with(self, message: DlqMessage) -> int:
        """The source's maxReceiveCount for SQS redrive, 0 for other producers.

        Without `DeadLetterQueueSourceArn` (some emulators never send it) a DLQ with redrive
        sources is assumed fed by them; with several, the smallest count (never over-counts
        the receives a message had before it arrived).
        """
        if message.carried_source and message.source_arn in (None, message.carried_source):
            return 0  # a copy we sent to the DLQ ourselves: counted from 1
        if message.source_arn:
            source = self.by_arn.get(message.source_arn)
            return source.max_receive_count if source else 0
        if self.by_arn:
            return min(s.max_receive_count for s in self.by_arn.values())
        return 0

    def time_left(self, messages: Sequence[DlqMessage], now: float) -> float | None:
        """The least time any of the messages has before the DLQ's retention drops it (SQS
        counts from `SentTimestamp`: a standard DLQ keeps the source's enqueue time). None:
        the retention or every send time is unknown."""
        if self.retention_seconds is None:
            return None
        sent = [m.sent_at for m in messages if m.sent_at is not None]
        return self.retention_seconds - (now - min(sent)) if sent else None
