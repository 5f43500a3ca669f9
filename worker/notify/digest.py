"""Digests (pure): events are counted per (event, queue, reason, error, error type) and one
digest a key leaves per window (SPEC.md, Notifications).

A key's window opens with its first event and closes `window_seconds` later; what comes after
opens the next. `arrived` opens when a queue receives new messages after `quiet_seconds`
without any, and counts what it receives until its window closes. Memory is bounded: at most
MAX_KEYS keys are open (more distinct error types fold into `other`), and at most
MAX_SAMPLES ids a digest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from worker.core.notices import ParkedNotice
from worker.core.parking import iso_time

MAX_SAMPLES = 5
MAX_SAID_CHARS = 300  # of an error message in a digest (parking keeps 1 KiB)
MAX_KEYS = 1000
OTHER = "(more kinds)"  # where events beyond MAX_KEYS are counted

Key = tuple[str, str, str | None, str | None, str | None]  # event, queue, reason, error, type


@dataclass
class Window:
    start: float  # monotonic: a clock step never holds a window open or closes it early
    end: float
    wall_start: float  # epoch seconds, for the digest
    count: int = 0
    samples: list[str] = field(default_factory=list)
    said: str | None = None  # what the target said, the first time in the window

    def add(self, message_ids: Sequence[str]) -> None:
        self.count += len(message_ids)
        room = MAX_SAMPLES - len(self.samples)
        if room > 0:
            self.samples.extend(message_ids[:room])


class Digests:
    def __init__(
        self,
        *,
        window_seconds: float,
        quiet_seconds: float,
        events: Sequence[str] = ("parked", "arrived"),
        console_url: str | None = None,
        started: float = 0.0,
        wall: Callable[[], float] | None = None,
        said: bool = True,
    ) -> None:
        """Times (`now`, `started`) are monotonic; `wall` gives epoch seconds for the digests
        (None: the monotonic times are epoch seconds, as in tests)."""
        self._window = window_seconds
        self._quiet = quiet_seconds
        self._events = frozenset(events)
        self._console = console_url.rstrip("/") if console_url else None
        self._said = said  # what a target said goes in the digests (`error_messages`)
        self._open: dict[Key, Window] = {}
        self._closed: list[dict[str, Any]] = []  # digests of windows closed between ticks
        # When each queue last received new messages (the quiet spell starts at boot: a
        # restart does not announce what was already flowing).
        self._last_arrival: dict[str, float] = {}
        self._started = started
        self._wall = wall
        self.folded = 0  # events counted under `other` for want of room

    def parked(self, notice: ParkedNotice, now: float) -> None:
        if "parked" not in self._events:
            return
        key: Key = ("parked", notice.queue, notice.reason, notice.error, notice.error_type)
        if key not in self._open and len(self._open) >= MAX_KEYS:
            key = ("parked", notice.queue, notice.reason, OTHER, OTHER)
            self.folded += 1
        window = self._window_for(key, now)
        window.add([notice.message_id])
        if self._said and window.said is None and notice.error_message:
            window.said = notice.error_message[:MAX_SAID_CHARS]

    def received(self, queue: str, message_ids: Sequence[str], now: float) -> None:
        if not message_ids:
            return
        last = self._last_arrival.get(queue, self._started)
        self._last_arrival[queue] = now
        if "arrived" not in self._events:
            return
        key: Key = ("arrived", queue, None, None, None)
        window = self._current(key, now)
        if window is None and now - last >= self._quiet:
            window = self._window_for(key, now)
        if window is not None:  # the arrival after a quiet spell, and what follows it
            window.add(message_ids)

    def _current(self, key: Key, now: float) -> Window | None:
        """The key's window if it is still open; one that has ended is closed (its digest
        waits for `due`)."""
        window = self._open.get(key)
        if window is not None and window.end <= now:
            self._closed.append(self._digest(key, self._open.pop(key), now))
            return None
        return window

    def _window_for(self, key: Key, now: float) -> Window:
        window = self._current(key, now)
        if window is None:
            wall = self._wall() if self._wall is not None else now
            window = self._open[key] = Window(now, now + self._window, wall)
        return window

    def due(self, now: float, *, everything: bool = False) -> list[dict[str, Any]]:
        """The digests whose window has closed (all of them at shutdown), closed."""
        ready = [k for k, w in self._open.items() if everything or w.end <= now]
        closed, self._closed = self._closed, []
        return closed + [self._digest(key, self._open.pop(key), now) for key in ready]

    def _digest(self, key: Key, window: Window, now: float) -> dict[str, Any]:
        event, queue, reason, error, error_type = key
        return {
            "event": event,
            "queue": queue,
            "reason": reason,
            "error": error,
            "error_type": error_type,
            "error_message": window.said,
            "count": window.count,
            "window_start": iso_time(window.wall_start),
            "window_end": iso_time(window.wall_start + min(window.end, now) - window.start),
            "sample_message_ids": list(window.samples),
            "console": self._link(key),
        }

    def _link(self, key: Key) -> str | None:
        """The console's page of the queue, filtered by the digest's reason, error and type
        (`none`: parked without one); it may show more of them than the window's."""
        event, queue, reason, error, error_type = key
        if self._console is None:
            return None
        link = f"{self._console}/queues/{quote(queue, safe='')}"
        if event != "parked" or error == OTHER:
            return link
        filters = {"reason": reason, "error": error, "error_type": error_type or "none"}
        return f"{link}?{urlencode(filters)}"
