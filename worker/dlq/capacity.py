"""A queue's room: how many messages it may take now (its `concurrency`, one token a message
from receive until its delivery ends), and its turn to poll (the process's poll slots, from
the descriptor budget; queues take turns when there are more queues than slots). Waiting for
either beats: a slow target or a long queue of turns is not a dead loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio

WAIT_SLICE_SECONDS = 5.0


async def _acquire(acquire: Callable[[], Awaitable[None]], beat: Callable[[], None]) -> None:
    while True:
        with anyio.move_on_after(WAIT_SLICE_SECONDS):
            await acquire()
            return
        beat()


class Room:
    def __init__(
        self, concurrency: int, batch_size: int, polls: anyio.CapacityLimiter | None
    ) -> None:
        self._tokens = anyio.Semaphore(concurrency)
        self._batch = batch_size
        self._polls = polls

    async def take(self, beat: Callable[[], None]) -> int:
        """Wait for room for one message, then take what else is free, up to a batch."""
        await _acquire(self._tokens.acquire, beat)
        taken = 1
        while taken < self._batch:
            try:
                self._tokens.acquire_nowait()
            except anyio.WouldBlock:
                break
            taken += 1
        return taken

    def give(self, count: int) -> None:
        for _ in range(count):
            self._tokens.release()

    @asynccontextmanager
    async def poll_slot(self, beat: Callable[[], None]) -> AsyncIterator[None]:
        if self._polls is None:
            yield
            return
        polls, owner = self._polls, object()
        await _acquire(lambda: polls.acquire_on_behalf_of(owner), beat)
        try:
            yield
        finally:
            polls.release_on_behalf_of(owner)
