"""`retry-worker restore FILE --to QUEUE`: send the messages of a backup or export file back,
as they were (SPEC.md, Operator commands), resumable: a journal beside the file remembers what
was sent."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import anyio

from worker.aws.clients import Clients
from worker.aws.sqs import SqsQueue
from worker.core.bucket import TokenBucket
from worker.ops.moves import send_entries
from worker.ops.records import Saved
from worker.ops.store import Location, read_all


async def restore(
    where: Location,
    queue: SqsQueue,
    *,
    yes: bool,
    rate: float,
    stop: anyio.Event,
    clients: Clients | None = None,
) -> tuple[int, dict[str, str]]:
    """Send the messages of a backup or export (a file, or S3 with `clients`) as they were
    (or, without `yes`, count them); returns (sent or counted, failed). Ctrl-C stops between
    chunks.

    What was sent is written to a journal beside the file (`<file>.sent-to-<queue>`; for S3,
    in the working directory, named after the key), on disk before the next chunk goes: run
    again after Ctrl-C or a partial failure, the command sends only what was not sent yet."""
    sent = 0
    failed: dict[str, str] = {}
    bucket = TokenBucket(rate, max(1, int(rate)), time.monotonic)
    chunk: list[Saved] = []
    queue_name = queue.url.rsplit("/", 1)[-1]
    if isinstance(where, Path):
        journal = Journal(where.with_name(f"{where.name}.sent-to-{queue_name}"))
    else:  # named after the whole location and queue: two backups may share a file name
        which = hashlib.sha256(f"{where}\n{queue.url}".encode()).hexdigest()[:12]
        journal = Journal(Path(f"{where.name}.{which}.sent-to-{queue_name}"))

    async def flush() -> None:
        nonlocal sent
        await anyio.sleep(bucket.reserve(len(chunk)))
        items = [(s.message_id, s.body, s.attributes, s.group_id) for s in chunk]
        with anyio.CancelScope(shield=True):
            refused = await send_entries(queue, items)
            journal.add(s.message_id for s in chunk if s.message_id not in refused)
        failed.update(refused)
        sent += len(chunk) - len(refused)
        chunk.clear()

    done = journal.read()
    async for saved in read_all(where, clients):
        if stop.is_set():
            break
        if saved.message_id in done:
            continue  # sent by an earlier run
        if not yes:
            sent += 1
            continue
        chunk.append(saved)
        if len(chunk) == 10:
            await flush()
    if chunk:
        await flush()
    journal.close()
    return sent, failed


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
