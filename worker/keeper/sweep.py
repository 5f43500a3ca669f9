"""One pass over a parking queue (`sweep`): read every message with a short hold, re-park what
is due, release the rest.

A due message's copy — same body, attributes and metadata, `parked-at` unchanged, `kept` one
more, `kept-from` the old id (`core/parking.kept_copy`) — is sent first; the old one is deleted
only after its copy was accepted. A crash between the two leaves two copies, never none: the
next pass, seeing a young copy whose `kept-from` names a due message, deletes that message
instead of copying it again. A FIFO group is re-parked whole from its first due message on, in
order (a copy goes to the back of its group), each copy with a fresh deduplication id, never
sent twice (a retried entry would land behind later ones of its group).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog

from worker.aws.errors import error_code
from worker.aws.sqs import SqsQueue, message_entry
from worker.core.parking import kept_copy, parked_at, read_parked

WAIT_SECONDS = 1
EMPTY_RECEIVES = 2  # consecutive empty receives that end a pass: everything was read
STALE_RECEIVES = 5  # receives of only what this pass read already: the holds ran out
PACE_AFTER = 200  # messages read before the pass's pace is trusted
MAX_HOLD_SECONDS = 900  # a pass never hides a message longer (operators read the queue too)
OVER_LIMIT = frozenset({"OverLimit", "AWS.SimpleQueueService.OverLimit"})

Raw = dict[str, Any]


@dataclass
class Pass:
    """What one pass found and did."""

    read: int = 0
    kept: int = 0  # copies sent and their old copy deleted
    doubled: int = 0  # a copy sent, its old one not deleted (two copies: the next pass mends)
    mended: int = 0  # old copies deleted because a crash had left their copy already
    failed: int = 0  # due, but the copy was refused: still parked, tried again next pass
    complete: bool = True  # every message was read (else the next check passes again)
    why: str = ""  # an incomplete pass: why
    oldest_sent: float | None = None  # of what stays: when the next pass may be due
    oldest_parked: float | None = None  # the oldest `parked-at` seen
    copies: set[str] = field(default_factory=set)  # ids of the copies this pass sent
    reparked: set[str] = field(default_factory=set)  # ids this pass sent a copy of
    release: dict[str, str] = field(default_factory=dict)  # id -> receipt, shown again at the end


async def sweep(
    queue: SqsQueue,
    due_age: float,
    started: float,
    done: Pass,
    *,
    hold: int,
    wait: int = WAIT_SECONDS,
    expected: int = 0,
    log: structlog.typing.FilteringBoundLogger,
) -> None:
    """Re-park every message sent `due_age` seconds or more before `started`, into `done` as
    it goes (the caller releases `done.release`, whatever happens). `expected`: how many the
    queue said it held (a pass that read that many read everything)."""
    sweeping = _Sweep(queue, due_age, started, done, (hold, wait), log)
    sweeping.expected = expected
    await sweeping.run()


class _Sweep:
    def __init__(
        self,
        queue: SqsQueue,
        due_age: float,
        started: float,
        done: Pass,
        hold_and_wait: tuple[int, int],
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.queue, self.done, self._log = queue, done, log
        self._due_age, self._started = due_age, started
        self._hold, self._wait = hold_and_wait
        self.expected = 0
        self._began = time.monotonic()
        self._seen: set[str] = set()
        self._due: list[Raw] = []  # standard queues: re-parked at the end, every copy known
        self._copied_from: dict[str, str] = {}  # kept-from -> the id of a young copy of it
        self._moving: set[str] = set()  # FIFO groups re-parked from their first due message
        self._doubles: dict[str, str] = {}  # copies a crash left of what this pass copied

    async def run(self) -> None:
        done, empty, stale = self.done, 0, 0
        limit = await self.queue.max_message_bytes()
        while empty < EMPTY_RECEIVES and stale < STALE_RECEIVES:
            try:
                raw = await self.queue.receive(10, self._wait, self._hold_now())
            except Exception as exc:
                if error_code(exc) not in OVER_LIMIT:
                    raise
                done.complete, done.why = False, "OverLimit"  # too many in flight to read
                break
            fresh = [m for m in raw if m["MessageId"] not in self._seen]
            empty = 0 if raw else empty + 1
            stale = 0 if fresh or not raw else stale + 1
            now_due = [m for m in fresh if self._is_due(m)]
            if self.queue.is_fifo:
                await self._repark(now_due, limit)  # in order, now: the group goes on
            else:
                self._due.extend(now_due)
        if stale >= STALE_RECEIVES and done.complete and len(self._seen) < self.expected:
            done.complete, done.why = False, "held_too_long"  # came back before the end
        await self._repark(self._due, limit)
        if self._doubles:
            not_deleted = await self.queue.delete(self._doubles)
            done.mended += len(self._doubles) - len(not_deleted)
        if done.kept or done.doubled:
            done.oldest_sent = min(done.oldest_sent or self._started, self._started)

    def _hold_now(self) -> int:
        """The least hold, or — once the pace is known — twice the pass's projected length
        (up to `MAX_HOLD_SECONDS`): a large queue is read to its end before the first
        messages come back."""
        read = len(self._seen)
        if read < PACE_AFTER or read >= self.expected:
            return self._hold
        projected = (time.monotonic() - self._began) * self.expected / read
        return int(min(MAX_HOLD_SECONDS, max(self._hold, 2 * projected)))

    def _is_due(self, message: Raw) -> bool:
        """Whether to re-park it now; what is not due is held to be released at the end."""
        done, mid, receipt = self.done, message["MessageId"], message["ReceiptHandle"]
        self._seen.add(mid)
        done.read += 1
        system = message.get("Attributes", {})
        sent = int(system.get("SentTimestamp", "0")) / 1000
        group = system.get("MessageGroupId")
        meta = _meta(message)
        if (at := parked_at(meta)) is not None:
            done.oldest_parked = min(done.oldest_parked or at, at)
        if mid in done.copies:  # our own copy, come round: young
            done.release[mid] = receipt
            self._moving.discard(group or "")
            return False
        if self._started - sent >= self._due_age or (group is not None and group in self._moving):
            if group is not None:
                self._moving.add(group)
            return True
        if meta.get("kept-from") in done.reparked:  # a crash's copy: this pass's is newer
            self._doubles[mid] = receipt
            return False
        done.release[mid] = receipt
        if meta.get("kept-from"):
            self._copied_from[meta["kept-from"]] = mid
        done.oldest_sent = min(done.oldest_sent or sent, sent)
        return False

    async def _repark(self, messages: list[Raw], limit: int) -> None:
        """Send a copy of each, then delete each one whose copy was accepted (one whose copy
        a crash already left is only deleted). What stays is shown again at the end."""
        if not messages:
            return
        by_entry = {str(i): m for i, m in enumerate(messages)}
        to_delete = {
            i: m["ReceiptHandle"]
            for i, m in by_entry.items()
            if m["MessageId"] in self._copied_from  # a crash left its copy: the old one goes
        }
        entries = [_copy(i, m, limit) for i, m in by_entry.items() if i not in to_delete]
        if entries:
            fifo = self.queue.is_fifo
            sent, failed = await self.queue.send(entries, attempts=1 if fifo else 3)
            for answer in sent:
                self.done.copies.add(answer["MessageId"])
                self.done.reparked.add(by_entry[answer["Id"]]["MessageId"])
                to_delete[answer["Id"]] = by_entry[answer["Id"]]["ReceiptHandle"]
            for entry_id, failure in failed.items():
                self._refused(by_entry[entry_id], failure.code)
        not_deleted = await self.queue.delete(to_delete) if to_delete else {}
        for entry_id in to_delete:
            self._deleted(by_entry[entry_id], entry_id not in not_deleted)

    def _stays(self, message: Raw) -> None:
        """A due message that stays (its copy refused, or it not deleted): shown again, and
        the next check passes again for it (it is the oldest)."""
        done = self.done
        done.release[message["MessageId"]] = message["ReceiptHandle"]
        sent = int(message.get("Attributes", {}).get("SentTimestamp", "0")) / 1000
        done.oldest_sent = min(done.oldest_sent or sent, sent)

    def _refused(self, message: Raw, code: str) -> None:
        self.done.failed += 1
        self._stays(message)
        self._log.warning("keeper_copy_refused", message_id=message["MessageId"], error=code)

    def _deleted(self, message: Raw, deleted: bool) -> None:
        mid, done = message["MessageId"], self.done
        if not deleted:
            self._stays(message)
            done.doubled += mid not in self._copied_from
        elif mid in self._copied_from:
            done.mended += 1
        else:
            done.kept += 1


def _copy(entry_id: str, message: Raw, limit: int) -> dict[str, Any]:
    """The SendMessageBatch entry of a message's kept copy."""
    mid = message["MessageId"]
    copy = kept_copy(mid, message.get("Body", ""), message.get("MessageAttributes", {}), limit)
    system = message.get("Attributes", {})
    entry = message_entry(
        entry_id, copy.body, copy.attributes, trace_header=system.get("AWSTraceHeader")
    )
    if (group := system.get("MessageGroupId")) is not None:
        entry["MessageGroupId"] = group
        entry["MessageDeduplicationId"] = uuid.uuid4().hex
    return entry


async def release(queue: SqsQueue, held: dict[str, str]) -> None:
    """Visible again at once (what fails comes back by itself when its hold runs out)."""
    if held:
        await queue.change_visibility({str(i): (r, 0) for i, r in enumerate(held.values())})


def _meta(message: Raw) -> dict[str, str]:
    view = read_parked(message.get("Body", ""), message.get("MessageAttributes", {}))
    return view.meta if view is not None else {}
