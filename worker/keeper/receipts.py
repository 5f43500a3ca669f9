"""Receipt handles a keeper's pass releases at its end, spilled to a temporary file (a pass
over a million parked messages keeps none of them in memory)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from typing import IO

from worker.aws.sqs import SqsQueue


class Receipts:
    """Receipt handles to release at the end of a pass, spilled to a temporary file."""

    def __init__(self) -> None:
        self._file: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self.count = 0

    def add(self, receipt: str) -> None:
        self._file.write(json.dumps(receipt) + "\n")
        self.count += 1

    def chunks(self, size: int) -> Iterator[list[str]]:
        self._file.flush()
        self._file.seek(0)
        chunk: list[str] = []
        for line in self._file:
            chunk.append(json.loads(line))
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def close(self) -> None:
        self._file.close()


async def release(queue: SqsQueue, held: Receipts) -> None:
    """Visible again at once (what fails comes back by itself when its hold runs out)."""
    try:
        for chunk in held.chunks(100):
            await queue.change_visibility({str(i): (r, 0) for i, r in enumerate(chunk)})
    finally:
        held.close()
