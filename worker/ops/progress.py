"""Progress for the operator commands: a bar redrawn in place on a terminal, a plain line
every few seconds otherwise (logs, `kubectl exec` without a TTY)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TextIO

WIDTH = 30
LINE_EVERY_SECONDS = 5.0
REDRAW_EVERY_SECONDS = 0.1


class Watcher(Protocol):
    """What a read reports its counts to: this bar, or a console page's job."""

    def update(self, **counts: int) -> None: ...

    def finish(self) -> None: ...


class Progress:
    def __init__(
        self,
        stream: TextIO,
        label: str,
        total: int | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._label = label
        self._total = total
        self._clock = clock
        self._tty = stream.isatty()
        self._last = -1e9
        self._counts: dict[str, int] = {}

    def update(self, **counts: int) -> None:
        self._counts.update(counts)
        self._draw(force=False)

    def _draw(self, *, force: bool) -> None:
        now = self._clock()
        every = REDRAW_EVERY_SECONDS if self._tty else LINE_EVERY_SECONDS
        if not force and now - self._last < every:
            return
        self._last = now
        if self._tty:
            self._stream.write("\r" + self._text())
        else:
            self._stream.write(self._text() + "\n")
        self._stream.flush()

    def finish(self) -> None:
        self._draw(force=True)
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def _text(self) -> str:
        read = self._counts.get("read", 0)
        counts = " ".join(f"{k}={v}" for k, v in self._counts.items())
        if self._total:
            filled = min(WIDTH, WIDTH * read // self._total)
            bar = "#" * filled + "." * (WIDTH - filled)
            return f"{self._label} [{bar}] {read}/~{self._total} {counts}"
        return f"{self._label} {counts}"
