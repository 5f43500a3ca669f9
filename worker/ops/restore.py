"""`retry-worker restore FILE --to QUEUE`: send the messages of a backup or export file back,
as they were (SPEC.md, Operator commands), resumable: a journal beside the file remembers what
was sent."""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TextIO

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from worker.aws.clients import Clients
from worker.aws.sqs import SqsQueue
from worker.core.bucket import TokenBucket
from worker.core.parking import DEFAULT_GROUP_ID
from worker.ops.records import Saved
from worker.ops.scan import PARALLEL
from worker.ops.senders import send_entries
from worker.ops.store import Location, read_all


async def restore(
    where: Location,
    queue: SqsQueue,
    *,
    yes: bool,
    rate: float,
    stop: anyio.Event,
    clients: Clients | None = None,
    parallel: int = PARALLEL,
) -> tuple[int, dict[str, str]]:
    """Send the messages of a backup or export (a file, or S3 with `clients`) as they were
    (or, without `yes`, count them); returns (sent or counted, failed). Ctrl-C stops between
    chunks.

    `parallel` lanes send at once, each its chunks in the file's order; a message's lane is
    its FIFO group's (its id's on a standard queue), so a group keeps its order.

    What was sent is written to a journal beside the file (`<file>.sent-to-<queue>`; for S3,
    in the working directory, named after the key), on disk before the next chunk goes: run
    again after Ctrl-C or a partial failure, the command sends only what was not sent yet."""
    queue_name = queue.url.rsplit("/", 1)[-1]
    if isinstance(where, Path):
        journal = Journal(where.with_name(f"{where.name}.sent-to-{queue_name}"))
    else:  # named after the whole location and queue: two backups may share a file name
        which = hashlib.sha256(f"{where}\n{queue.url}".encode()).hexdigest()[:12]
        journal = Journal(Path(f"{where.name}.{which}.sent-to-{queue_name}"))
    done = journal.read()
    lanes = _Lanes(queue, journal, TokenBucket(rate, max(1, int(rate)), time.monotonic), stop)
    counted = 0
    async with lanes.running(parallel if yes else 0):
        async for saved in read_all(where, clients):
            if stop.is_set():
                break
            if saved.message_id in done:
                continue  # sent by an earlier run
            if yes:
                await lanes.add(saved)
            else:
                counted += 1
    journal.close()
    return (lanes.sent if yes else counted), lanes.failed


class _Lanes:
    """Senders of chunks of 10, each its own in order, all under one rate; a message goes to
    its FIFO group's lane (its id's on a standard queue), so a group keeps its order."""

    def __init__(
        self, queue: SqsQueue, journal: Journal, bucket: TokenBucket, stop: anyio.Event
    ) -> None:
        self._queue = queue
        self._journal = journal
        self._bucket = bucket
        self._stop = stop
        self._ends: list[MemoryObjectSendStream[list[Saved]]] = []
        self._chunks: list[list[Saved]] = []
        self.sent = 0
        self.failed: dict[str, str] = {}

    @asynccontextmanager
    async def running(self, count: int) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            for _ in range(count):
                send, receive = anyio.create_memory_object_stream[list[Saved]](1)
                self._ends.append(send)
                self._chunks.append([])
                tasks.start_soon(self._lane, receive)
            try:
                yield
                for at, chunk in enumerate(self._chunks):
                    if chunk and not self._stop.is_set():
                        await self._ends[at].send(chunk)
            finally:
                for end in self._ends:
                    end.close()

    async def add(self, saved: Saved) -> None:
        # the group the send gives it (a line without one: DEFAULT_GROUP_ID, on a FIFO queue)
        group = saved.group_id or (DEFAULT_GROUP_ID if self._queue.is_fifo else saved.message_id)
        at = zlib.crc32(group.encode()) % len(self._ends)
        self._chunks[at].append(saved)
        if len(self._chunks[at]) == 10:
            chunk, self._chunks[at] = self._chunks[at], []
            await self._ends[at].send(chunk)

    async def _lane(self, chunks: MemoryObjectReceiveStream[list[Saved]]) -> None:
        async with chunks:
            async for chunk in chunks:
                with anyio.move_on_after(self._bucket.reserve(len(chunk))):
                    await self._stop.wait()
                if self._stop.is_set():
                    continue  # not sent: the next run sends it
                items = [
                    (s.message_id, s.body, s.attributes, s.group_id, s.trace_header) for s in chunk
                ]
                with anyio.CancelScope(shield=True):
                    refused = await send_entries(self._queue, items)
                    self._journal.add(s.message_id for s in chunk if s.message_id not in refused)
                self.failed.update(refused)
                self.sent += len(chunk) - len(refused)


class Journal:
    """The ids a restore has sent, one per line, flushed and fsynced as it goes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None

    def read(self) -> set[str]:
        if not self.path.exists():
            return set()
        return {line.strip() for line in self.path.read_text(encoding="utf-8").splitlines()}

    def add(self, ids: Iterable[str]) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        self._file.writelines(f"{i}\n" for i in ids)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
