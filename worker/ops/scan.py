"""Reading a queue: SQS has no other way than receiving. Every message is read once and held
invisible while the command runs; what the command did not act on is released (visibility 0)
at the end, Ctrl-C included. The receipts to release are spilled to a temporary file, so
reading a million messages keeps memory bounded (a hash of each id is kept, about 72 bytes a
message, to skip a message that came back because its hold ran out).

Receives run in parallel, as the daemon's do: each full receive adds one, up to `parallel`;
a batch waits in its receiver until a taker is free (a slow replay holds back the reads: at
most 2 x `parallel` batches are read and not yet acted on). Leaving the reader's `async with`
ends the receives after the one in flight, keeps what nobody took and releases it all.

Each receive holds its messages until the read is surely over (`holds.py`). A message that
comes back anyway is kept again, and receives that bring back only messages already read end
the read once every message was read — or after `STALE_RECEIVES` of them in a row, when the
count it began with was too high (messages deleted meanwhile) or the holds are short (the
console's): it never cycles, and says how far it got.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from worker.aws.errors import error_code
from worker.aws.sqs import SqsQueue
from worker.ops.holds import HOLD_SECONDS, Holds
from worker.ops.kept import Kept
from worker.ops.progress import Watcher
from worker.ops.records import Record
from worker.settings import VISIBILITY_LIMIT_SECONDS

# ReceiveMessage refuses once the queue has too many messages in flight.
OVER_LIMIT = frozenset({"OverLimit", "AWS.SimpleQueueService.OverLimit"})
EMPTY_RECEIVES = 2  # empty long polls in a row that end a read (1 once all counted are read)
STALE_RECEIVES = 5  # consecutive receives of messages read already that end a read
WAIT_SECONDS = 1
RECEIVE_ATTEMPTS = 5  # a failed receive, tried again after 0.2, 0.4, 0.8 and 1.6 s
PARALLEL = 10  # receives (and releases) in flight at most, by default


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
        parallel: int = PARALLEL,
        until_expected: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue = queue
        self._progress = progress
        self._stop = stop or anyio.Event()
        self._seen: set[int] = set()  # hashes of the ids read
        self.read = 0
        self._expected = expected  # the queue's visible count when the read began
        self.incomplete: str | None = None  # why the read could not see every message
        self.parallel = max(1, parallel)
        # read ahead: a batch a receiver and a batch a taker
        self._holds = Holds(hold, max_hold, 2 * 10 * self.parallel, monotonic)
        self._until_expected = until_expected  # a view (the console's): no more once read
        self.unreleased = 0  # kept messages that could not be released (their hold ends)
        self._exit = AsyncExitStack()
        self._tasks: TaskGroup | None = None
        self._receivers = 0  # started, in all
        self._active = 0  # receiving now
        self._finished = False  # no receive starts any more
        self._failure: BaseException | None = None
        self._raised = self._enough = False  # the failure raised; --limit reached
        self._retiring = 0  # receivers leaving once their batch is taken
        self._empty = self._stale = 0
        self._busy = 0  # batches read and not yet acted on (waiting in a receiver, or taken)
        self._gave_up = False  # stale receives, not the end of the queue, ended it

    async def __aenter__(self) -> QueueReader:
        self._kept = Kept()
        # No buffer: a batch waits in its receiver until a taker is free (read ahead: at most
        # a batch a receiver and a batch a taker)
        self._send, self._out = anyio.create_memory_object_stream[list[Record]](0)
        self._exit.enter_context(self._out)
        self._tasks = await self._exit.enter_async_context(anyio.create_task_group())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        self.finish()
        try:
            with anyio.CancelScope(shield=True):  # what was received is kept and released
                if not self._receivers:
                    self._send.close()
                async for batch in self._out:  # ends once every receiver has ended
                    for record in batch:
                        self.keep(record)
        finally:
            try:
                done = await self._exit.__aexit__(kind, exc, tb)
            finally:
                self.unreleased = await self.release()  # shielded
        return done

    def finish(self, *, enough: bool = False) -> None:
        """No more receives: the command is over, or it has all it asked for (`enough`:
        `--limit`; then a read short of the queue's count is not incomplete)."""
        self._finished = True
        self._enough = self._enough or enough

    @property
    def stopped(self) -> bool:
        """Ctrl-C (or SIGTERM) came."""
        return self._stop.is_set()

    async def wait_or_stop(self, seconds: float) -> bool:
        """Sleep up to `seconds`, ending early on Ctrl-C; whether the command goes on."""
        if seconds > 0:
            with anyio.move_on_after(seconds):
                await self._stop.wait()
        return not self._stop.is_set()

    async def batches(self) -> AsyncGenerator[list[Record], None]:
        """Batches of up to 10 records, each message once. Several tasks may take batches at
        once (each its own iterator); after Ctrl-C what is left is kept, not handed out."""
        if self._tasks is None:
            raise RuntimeError("a QueueReader is read inside `async with`")
        if not self._receivers:
            self._add_receiver(self._send, WAIT_SECONDS)
            self._send.close()  # the receivers hold their own ends: the stream ends with them
        async for batch in self._out:
            self._busy -= 1
            if self._stop.is_set():
                for record in batch:
                    self.keep(record)
                continue
            self._busy += 1  # until its taker asks for the next: then it was acted on
            try:
                yield batch
            finally:
                self._busy -= 1
        if self._failure is not None and not self._raised:
            self._raised = True  # once, to one of the takers: the others just end
            raise self._failure
        self._check_fifo_read()
        if self._gave_up and not self._read_all() and self.incomplete is None and not self._enough:
            self.incomplete = (
                f"read {self.read} of about {self._expected} messages, then only messages "
                "read already came back (their hold ended): any left were not seen"
            )

    def _add_receiver(self, send: MemoryObjectSendStream[list[Record]], wait: int) -> None:
        assert self._tasks is not None
        self._receivers += 1
        self._active += 1
        self._tasks.start_soon(self._receive, send.clone(), wait)

    async def _receive(self, send: MemoryObjectSendStream[list[Record]], wait: int) -> None:
        """Receives until the read is over. After a full receive the next does not wait (the
        queue has more); only a long poll says it is empty. One not full retires all but the
        last receiver."""
        async with send:
            while not self._finished and not self._stop.is_set():
                # A receive is never abandoned halfway: what it took is kept, and released.
                with anyio.CancelScope(shield=True):
                    raw = await self._received(wait)
                    batch = self._new(raw, waited=wait > 0)
                full = len(batch) == 10
                if full and self._active < self.parallel and not self._finished:
                    self._add_receiver(send, 0)  # the queue has more to give
                # one always stays: two retiring at once see each other leaving
                retire = not full and self._active - self._retiring > 1
                self._retiring += retire
                if batch:
                    self.read += len(batch)
                    self.progress(read=self.read)
                    if self._until_expected and self._read_all():
                        self.finish()
                    self._busy += 1
                    try:
                        await send.send(batch)
                    except BaseException:
                        self._busy -= 1
                        for record in batch:
                            self.keep(record)
                        raise
                if retire:
                    self._retiring -= 1
                    break
                wait = 0 if full else WAIT_SECONDS
            self._active -= 1  # only now: its batch was read ahead until taken

    async def _received(self, wait: int) -> list[dict[str, Any]]:
        """One receive; a failure (after the SDK's own retries) is tried again after a
        pause, `RECEIVE_ATTEMPTS` times in all, then ends the read (raised to the command).
        The in-flight limit ends it at once, saying why."""
        for attempt in range(RECEIVE_ATTEMPTS):
            try:
                return await self._queue.receive(10, wait, self.hold())
            except Exception as exc:  # noqa: BLE001 - tried again, or ends the read
                if error_code(exc) in OVER_LIMIT:
                    self._over_limit()
                    return []
                if self._finished or self._stop.is_set():
                    return []  # the read was over anyway: nothing was asked of this one
                if attempt == RECEIVE_ATTEMPTS - 1:
                    self.finish()
                    self._failure = self._failure or exc
                    return []
                await anyio.sleep(0.2 * 2**attempt)
        return []

    def _over_limit(self) -> None:
        self.finish()
        limit = "20,000" if self._queue.is_fifo else "120,000"
        self.incomplete = (
            f"read {self.read} messages, then the queue's in-flight limit (about {limit} "
            "messages received and not yet deleted) stopped the read: act in parts "
            "(--limit, or a narrower filter)"
        )

    def _new(self, raw: list[dict[str, Any]], *, waited: bool) -> list[Record]:
        """The records not read before, and whether the read is over: nothing new from a
        long poll means the queue is empty, or only messages read already came back after
        their hold (then the read is over once it has read every message it expected, or
        when they keep coming back and nothing new comes)."""
        batch = []
        for item in raw:
            record = Record.received(item)
            # By the id's hash: 72 MB for a million ids, not 118 (two of a million share
            # one in about one read in 37 million: the second is left where it is)
            key = hash(record.message_id)
            if key in self._seen:  # the hold ran out: already counted
                self.keep(record)
                continue
            self._seen.add(key)
            batch.append(record)
        if batch:
            self._empty = self._stale = 0
            self._gave_up = False
            return batch
        self._stale = self._stale + 1 if raw else 0
        self._gave_up = self._gave_up or self._stale >= STALE_RECEIVES
        # A FIFO group is not returned while a batch of it is being acted on: not empty yet.
        waited = waited and not (self._queue.is_fifo and self._busy)
        if (raw or waited) and (not raw or self._gave_up or self._read_all()):
            self._empty += 1
        enough = 1 if self._expected is not None and self._read_all() else EMPTY_RECEIVES
        if self._empty >= enough:  # all it was told of read: one empty poll says the rest
            self.finish()
        return batch

    def _read_all(self) -> bool:
        return self._expected is None or self.read >= self._expected

    def _check_fifo_read(self) -> None:
        """A FIFO queue returns nothing more of a group while one of its messages is held:
        a read that saw fewer messages than the queue held says so, never a short count."""
        expected = self._expected
        if not self._queue.is_fifo or expected is None or self._stop.is_set() or self._enough:
            return
        if self.read < expected and self.incomplete is None:
            self.incomplete = (
                f"read {self.read} of about {expected} messages: the rest wait behind messages "
                "of their FIFO group that this read holds (SQS returns no more of a group "
                "while one is in flight); act on what was read, then run the command again"
            )

    def hold(self) -> int:
        """Seconds the next receive holds its messages (`Holds`)."""
        return self._holds.seconds(self.read, self._expected)

    def paced(self, rate: float) -> None:
        """What is read is acted on at most `rate` messages a second."""
        self._holds.rate = rate

    def progress(self, **counts: int) -> None:
        """Shown while reading (a bar on a terminal, a line every few seconds otherwise)."""
        if self._progress is not None:
            self._progress.update(**counts)

    def keep(self, record: Record) -> None:
        """Leave this message where it is: released at the end."""
        self._kept.add(record.receipt_handle)

    async def release(self) -> int:
        """Make every kept message visible again; how many could not be (they reappear
        when their hold ends)."""
        failed = await self._kept.release(self._queue, self.parallel)
        if self._progress is not None:
            self._progress.finish()
        return failed
