"""Reading a queue: SQS has no other way than receiving. Every message is read once and held
invisible while the command runs; what the command did not act on is released (visibility 0)
at the end, Ctrl-C included. The receipts to release are spilled to a temporary file, so
reading 100,000 messages keeps memory bounded (one id per message is kept, to skip a message
that came back because its hold ran out).

The hold is at least `hold` seconds (30 minutes); once the read knows its pace and the
queue's count, each receive holds its messages until the read's projected end, twice over
(a replay at `--rate 10` through 50,000 messages runs 83 minutes), up to the 12 hours SQS
allows. A message that comes back anyway is kept again, and receives that bring back only
messages already read end the read once every message was read — or after
`STALE_RECEIVES` of them in a row, when the count it began with was too high (messages
deleted meanwhile) or the holds are short (the console's): it never cycles, and says how far
it got.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import AsyncGenerator, Callable

import anyio

from worker.aws.errors import error_code
from worker.aws.sqs import SqsQueue
from worker.ops.progress import Watcher
from worker.ops.records import Record
from worker.settings import VISIBILITY_LIMIT_SECONDS

# ReceiveMessage refuses once the queue has too many messages in flight.
OVER_LIMIT = frozenset({"OverLimit", "AWS.SimpleQueueService.OverLimit"})
HOLD_SECONDS = 1800  # the least hold; released at the end anyway
HOLD_MARGIN_SECONDS = 600
PACE_AFTER = 100  # messages read before the pace is trusted
EMPTY_RECEIVES = 2  # consecutive empty long polls that mean "nothing left to read"
STALE_RECEIVES = 5  # consecutive receives of messages read already that end a read
WAIT_SECONDS = 1
RELEASE_CHUNK = 100  # receipts per release call of the adapter (it sends batches of 10)


class QueueReader:
    def __init__(
        self,
        queue: SqsQueue,
        *,
        progress: Watcher | None = None,
        stop: anyio.Event | None = None,
        hold: int = HOLD_SECONDS,
        max_hold: int = VISIBILITY_LIMIT_SECONDS,
        expected: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue = queue
        self._progress = progress
        self._stop = stop or anyio.Event()
        self._hold = hold
        self._max_hold = max_hold
        self._seen: set[str] = set()
        self._spill = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed in release
        self._kept = 0
        self.read = 0
        self._expected = expected  # the queue's visible count when the read began
        self._monotonic = monotonic
        self._started = monotonic()
        self.incomplete: str | None = None  # why the read could not see every message

    async def batches(self) -> AsyncGenerator[list[Record], None]:
        """Batches of up to 10 records, each message once."""
        empty = stale = 0
        gave_up = False  # stale receives, not the end of the queue, ended it
        while empty < EMPTY_RECEIVES and not self._stop.is_set():
            try:
                raw = await self._queue.receive(10, WAIT_SECONDS, self.hold())
            except Exception as exc:
                if error_code(exc) not in OVER_LIMIT:
                    raise
                limit = "20,000" if self._queue.is_fifo else "120,000"
                self.incomplete = (
                    f"read {self.read} messages, then the queue's in-flight limit (about {limit} "
                    "messages received and not yet deleted) stopped the read: act in parts "
                    "(--limit, or a narrower filter)"
                )
                return
            batch = []
            for item in raw:
                record = Record.received(item)
                if record.message_id in self._seen:  # the hold ran out: already counted
                    self.keep(record)
                    continue
                self._seen.add(record.message_id)
                batch.append(record)
            # Nothing new: the queue is empty, or only messages read already came back after
            # their hold (then the read is over once it has read every message it expected,
            # or when they keep coming back and nothing new comes).
            if not batch:
                stale = stale + 1 if raw else 0
                gave_up = gave_up or stale >= STALE_RECEIVES
                if not raw or gave_up or self._read_all():
                    empty += 1
                continue
            empty = stale = 0
            gave_up = False
            self.read += len(batch)
            self.progress(read=self.read)
            yield batch
        self._check_fifo_read()
        if gave_up and not self._read_all() and self.incomplete is None:
            self.incomplete = (
                f"read {self.read} of about {self._expected} messages, then only messages "
                "read already came back (their hold ended): any left were not seen"
            )

    def _read_all(self) -> bool:
        return self._expected is None or self.read >= self._expected

    def _check_fifo_read(self) -> None:
        """A FIFO queue returns nothing more of a group while one of its messages is held:
        a read that saw fewer messages than the queue held says so, never a short count."""
        expected = self._expected
        if not self._queue.is_fifo or expected is None or self._stop.is_set():
            return
        if self.read < expected and self.incomplete is None:
            self.incomplete = (
                f"read {self.read} of about {expected} messages: the rest wait behind messages "
                "of their FIFO group that this read holds (SQS returns no more of a group "
                "while one is in flight); act on what was read, then run the command again"
            )

    def hold(self) -> int:
        """Seconds the next receive holds its messages: to the read's projected end, twice
        over plus a margin, at least `hold`, at most `max_hold` (by default the 12 hours SQS
        allows)."""
        expected = self._expected
        if expected is None or self.read < PACE_AFTER:
            return min(self._hold, self._max_hold)
        per_message = (self._monotonic() - self._started) / self.read
        left = max(0, expected - self.read) * per_message
        return int(min(self._max_hold, max(self._hold, 2 * left + HOLD_MARGIN_SECONDS)))

    def progress(self, **counts: int) -> None:
        """Shown while reading (a bar on a terminal, a line every few seconds otherwise)."""
        if self._progress is not None:
            self._progress.update(**counts)

    def keep(self, record: Record) -> None:
        """Leave this message where it is: released at the end."""
        self._spill.write(json.dumps(record.receipt_handle) + "\n")
        self._kept += 1

    async def release(self) -> int:
        """Make every kept message visible again; returns how many could not be released
        (they reappear when their hold ends)."""
        failed = 0
        self._spill.seek(0)
        pending: dict[str, tuple[str, int]] = {}
        with anyio.CancelScope(shield=True):
            for line in self._spill:
                pending[str(len(pending))] = (json.loads(line), 0)
                if len(pending) == RELEASE_CHUNK:
                    failed += len(await self._queue.change_visibility(pending))
                    pending = {}
            if pending:
                failed += len(await self._queue.change_visibility(pending))
        self._spill.close()
        if self._progress is not None:
            self._progress.finish()
        return failed
