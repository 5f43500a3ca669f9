"""One pass over a parking queue (`sweep`): read every message with a short hold, re-park what
is due, release the rest (receipts wait in a file: `receipts.py`).

A due message's copy (same body, attributes and metadata, `parked-at` unchanged, `kept` one
more, `kept-from` the old id: `core/parking.kept_copy`) is sent first; the old one is deleted
only once the copy was accepted. A crash between the two leaves two copies, never none, and
the next pass mends them by `kept-from`. Due messages are re-parked in chunks as they are read.

A FIFO group is re-parked whole from its first due message, in order, each copy with a fresh
deduplication id, never sent twice (a retried entry would land behind its group). When one of
a group's copies is refused, that request's messages of the group all stay, in order (the
copies made are mended by the next pass), and the group stops for this pass. A group longer
than one request whose first part moved keeps every message, but not its order, when a later
copy is refused: FIFO hands out a group's next messages only once the earlier ones are gone.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog

from worker.aws.errors import error_code
from worker.aws.sqs import SqsQueue, message_entry
from worker.core.envelope import DlqMessage, parse_message
from worker.core.parking import kept_copy, parked_at, read_parked
from worker.keeper.receipts import Receipts

WAIT_SECONDS = 1
EMPTY_RECEIVES = 2  # consecutive empty receives that end a pass: everything was read
STALE_RECEIVES = 5  # receives of only what this pass read already: the holds ran out
PACE_AFTER = 200  # messages read before the pass's pace is trusted
CHUNK = 100  # due messages re-parked together (standard queues)
MAX_DELAY_SECONDS = 900  # SQS's most DelaySeconds
OVER_LIMIT = frozenset({"OverLimit", "AWS.SimpleQueueService.OverLimit"})


@dataclass
class Pass:
    """What one pass found and did."""

    read: int = 0
    kept: int = 0  # copies sent and their old copy deleted
    doubled: int = 0  # a copy sent, its old one not deleted (two copies: the next pass mends)
    mended: int = 0  # old or extra copies deleted (a crash had left two)
    failed: int = 0  # due, but the copy was refused: still parked, tried again next pass
    complete: bool = True  # every message was read (else the next check passes again)
    why: str = ""  # an incomplete pass: why
    oldest_sent: float | None = None  # of what stays: when the next pass may be due
    oldest_parked: float | None = None  # the oldest `parked-at` seen
    existing: int = 0  # of what was read, what the queue held before the pass (not its copies)
    copies: set[int] = field(default_factory=set)  # hashes of the ids of the copies it sent
    reparked: set[int] = field(default_factory=set)  # hashes of the ids it sent a copy of
    release: Receipts = field(default_factory=Receipts)  # shown again at the end

    def stays(self, sent: float) -> None:
        self.oldest_sent = min(self.oldest_sent or sent, sent)

    def incomplete(self, why: str) -> None:
        if self.complete:
            self.complete, self.why = False, why


def _sent(message: DlqMessage) -> float:
    return message.sent_at or 0.0


async def sweep(
    queue: SqsQueue,
    due_age: float,
    started: float,
    done: Pass,
    *,
    hold: tuple[int, int],
    wait: int = WAIT_SECONDS,
    expected: int = 0,
    log: structlog.typing.FilteringBoundLogger,
) -> None:
    """Re-park every message sent `due_age` seconds or more before `started`, into `done` as
    it goes (the caller releases `done.release`, whatever happens). `hold`: the least and the
    most a receive hides what it reads; `expected`: how many the queue said it held (a pass
    that read fewer did not read everything)."""
    sweeping = _Sweep(queue, due_age, started, done, log)
    sweeping.hold, sweeping.wait, sweeping.expected = hold, wait, expected
    await sweeping.run()


class _Sweep:
    def __init__(
        self,
        queue: SqsQueue,
        due_age: float,
        started: float,
        done: Pass,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.queue, self.done, self._log = queue, done, log
        self._due_age, self._started = due_age, started
        self.hold, self.wait, self.expected = (60, 60), WAIT_SECONDS, 0
        self._began = time.monotonic()
        self._seen: set[int] = set()  # hashes of the ids read (a million cost ~60 MB)
        self._due: list[DlqMessage] = []  # standard queues: re-parked a chunk at a time
        self._copied_from: set[int] = set()  # hashes of kept-from ids a young copy names
        self._due_ids: set[int] = set()  # hashes of the ids found due (copied or to be)
        self._moving: set[str] = set()  # FIFO groups re-parked from their first due message
        self._stopped: set[str] = set()  # FIFO groups whose copy was refused: they wait
        self._doubles: dict[str, str] = {}  # copies a crash left of what this pass copied

    async def run(self) -> None:
        limit = await self.queue.max_message_bytes()
        try:
            await self._read(limit)
            await self._repark(self._due, limit)
            self._due = []
            await self._mend()
        finally:
            for message in self._due:  # not re-parked (a failure): shown again, due still
                self._stays(message)
        if self.done.kept or self.done.doubled:
            self.done.stays(self._started)
        if self.done.existing < self.expected and not self.queue.is_fifo:
            # held elsewhere, or the holds ran out (a FIFO group is read only to the first
            # messages of a group that is not due: the rest are younger)
            self.done.incomplete("not_all_read")

    async def _read(self, limit: int) -> None:
        empty = stale = 0
        while empty < EMPTY_RECEIVES and stale < STALE_RECEIVES:
            try:
                raw = await self.queue.receive(10, self.wait, self._hold_now())
            except Exception as exc:
                if error_code(exc) not in OVER_LIMIT:
                    raise
                self.done.incomplete("OverLimit")  # too many in flight to read more
                return
            fresh = [m for m in map(parse_message, raw) if hash(m.message_id) not in self._seen]
            empty = 0 if raw else empty + 1
            stale = 0 if fresh or not raw else stale + 1
            now_due = [m for m in fresh if self._is_due(m)]
            if self.queue.is_fifo:
                await self._repark(now_due, limit)  # in order, now: the group goes on
                await self._mend()  # now too: a held double would block its group
                continue
            self._due.extend(now_due)
            if len(self._due) >= CHUNK:
                await self._repark(self._due, limit)
                self._due = []

    async def _mend(self) -> None:
        """Delete the doubles found (a crash's copies of what this pass copied)."""
        if self._doubles:
            not_deleted = await self.queue.delete(self._doubles)
            self.done.mended += len(self._doubles) - len(not_deleted)
            self._doubles = {}

    def _hold_now(self) -> int:
        """The least hold, or — once the pace is known — twice the pass's projected length,
        within the most: a large queue is read to its end before the first messages come
        back."""
        least, most = self.hold
        read = len(self._seen)
        if read < PACE_AFTER or read >= self.expected:
            return least
        projected = (time.monotonic() - self._began) * self.expected / read
        return int(min(most, max(least, 2 * projected)))

    def _is_due(self, message: DlqMessage) -> bool:
        """Whether to re-park it now; what is not due is held to be released at the end."""
        done, mid, receipt = self.done, message.message_id, message.receipt_handle
        self._seen.add(hash(mid))
        done.read += 1
        group, meta = message.group_id, _meta(message)
        if (at := parked_at(meta)) is not None:
            done.oldest_parked = min(done.oldest_parked or at, at)
        if hash(mid) in done.copies:  # our own copy, come round: young
            done.release.add(receipt)
            self._moving.discard(group or "")
            return False
        done.existing += 1
        source = meta.get("kept-from")
        fifo = group is not None
        if source and (hash(source) in done.reparked or (fifo and hash(source) in self._due_ids)):
            # A crash's copy of one this pass copies (again): in a FIFO group the original
            # is the one in its place, so the copy goes.
            self._doubles[mid] = receipt
            return False
        if source and hash(source) in self._due_ids:
            self._copied_from.add(hash(source))  # due, not copied yet: it is only deleted
            source = None  # this copy stands for it
        if group is not None and group in self._stopped:
            self._stays(message)  # behind a refused one of its group: in order, for later
            return False
        old = self._started - _sent(message) >= self._due_age
        if old or (group is not None and group in self._moving):
            if group is not None:
                self._moving.add(group)
            self._due_ids.add(hash(mid))
            return True
        if source and hash(source) in self._copied_from:
            self._doubles[mid] = receipt  # two copies of one: a crash's, and a later one's
            return False
        done.release.add(receipt)
        if source:
            self._copied_from.add(hash(source))
        done.stays(_sent(message))
        return False

    async def _repark(self, messages: list[DlqMessage], limit: int) -> None:
        """Send a copy of each, then delete each one whose copy was accepted (one whose copy
        a crash already left is only deleted). What stays is shown again at the end."""
        if not messages:
            return
        by_entry = {str(i): m for i, m in enumerate(messages)}
        to_delete = {
            i: m.receipt_handle
            for i, m in by_entry.items()
            if hash(m.message_id) in self._copied_from  # a crash left its copy: old one goes
        }
        # A standard queue's copies wait out the least hold (DelaySeconds): this pass does not
        # read them again (they would cost a receive and a release each).
        delay = 0 if self.queue.is_fifo else min(MAX_DELAY_SECONDS, self.hold[0])
        entries = [_copy(i, m, limit, delay) for i, m in by_entry.items() if i not in to_delete]
        if entries:
            fifo = self.queue.is_fifo
            sent, failed = await self.queue.send(entries, attempts=1 if fifo else 3)
            refused_groups: set[str] = set()  # FIFO groups with a refused copy in this request
            for entry_id, failure in failed.items():
                self._refused(by_entry[entry_id], failure.code)
                if (group := by_entry[entry_id].group_id) is not None:
                    refused_groups.add(group)
            for answer in sent:
                message = by_entry[answer["Id"]]
                self.done.copies.add(hash(answer["MessageId"]))
                self.done.reparked.add(hash(message.message_id))
                if message.group_id in refused_groups:
                    # A group with a refused copy in this request keeps its messages where
                    # they are, in order; the copies made are mended by the next pass.
                    self._stays(message)
                    continue
                to_delete[answer["Id"]] = message.receipt_handle
        not_deleted = await self.queue.delete(to_delete) if to_delete else {}
        for entry_id in to_delete:
            self._deleted(by_entry[entry_id], entry_id not in not_deleted)

    def _stays(self, message: DlqMessage) -> None:
        """A due message that stays (its copy refused, it not deleted, behind a refused one):
        shown again, and the next check passes again for it (it is the oldest)."""
        self.done.release.add(message.receipt_handle)
        self.done.stays(_sent(message))

    def _refused(self, message: DlqMessage, code: str) -> None:
        self.done.failed += 1
        self.done.incomplete("copy_refused")
        if (group := message.group_id) is not None:
            self._stopped.add(group)
            self._moving.discard(group)
        self._stays(message)
        self._log.warning("keeper_copy_refused", message_id=message.message_id, error=code)

    def _deleted(self, message: DlqMessage, deleted: bool) -> None:
        mid, done = message.message_id, self.done
        if not deleted:
            self._stays(message)
            done.doubled += hash(mid) not in self._copied_from
        elif hash(mid) in self._copied_from:
            done.mended += 1
        else:
            done.kept += 1


def _copy(entry_id: str, message: DlqMessage, limit: int, delay: int = 0) -> dict[str, Any]:
    """The SendMessageBatch entry of a message's kept copy (`delay`: DelaySeconds)."""
    copy = kept_copy(message.message_id, message.body, message.attributes, limit)
    entry = message_entry(entry_id, copy.body, copy.attributes, trace_header=message.trace_header)
    if message.group_id is not None:
        entry["MessageGroupId"] = message.group_id
        entry["MessageDeduplicationId"] = uuid.uuid4().hex
    elif delay:
        entry["DelaySeconds"] = delay
    return entry


def _meta(message: DlqMessage) -> dict[str, str]:
    view = read_parked(message.body, message.attributes)
    return view.meta if view is not None else {}
