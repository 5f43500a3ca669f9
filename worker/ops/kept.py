"""What a read keeps where it is: the receipts of messages it did not act on, spilled to a
temporary file (reading 100,000 messages keeps memory bounded) and released at the end
(visibility 0), several requests in flight."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator

import anyio

from worker.aws.sqs import SqsQueue

RELEASE_CHUNK = 10  # receipts per ChangeMessageVisibilityBatch


class Kept:
    def __init__(self) -> None:
        self._spill = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed in release
        self.count = 0

    def add(self, receipt: str) -> None:
        self._spill.write(json.dumps(receipt) + "\n")
        self.count += 1

    async def release(self, queue: SqsQueue, parallel: int) -> int:
        """Every kept message visible again, `parallel` requests in flight, Ctrl-C or not;
        returns how many could not be released."""
        failed = 0
        slots = anyio.Semaphore(parallel)

        async def one(receipts: dict[str, tuple[str, int]]) -> None:
            nonlocal failed
            try:
                failed += len(await queue.change_visibility(receipts))
            finally:
                slots.release()

        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tasks:
                for receipts in self._chunks():
                    await slots.acquire()
                    tasks.start_soon(one, receipts)
        self._spill.close()
        return failed

    def _chunks(self) -> Iterator[dict[str, tuple[str, int]]]:
        self._spill.seek(0)
        pending: dict[str, tuple[str, int]] = {}
        for line in self._spill:
            pending[str(len(pending))] = (json.loads(line), 0)
            if len(pending) == RELEASE_CHUNK:
                yield pending
                pending = {}
        if pending:
            yield pending
