"""A queue's room: how many messages it may take now (its `concurrency`, one token a message
from receive until its delivery ends), how many may be settling at once (as many again: a
delivered batch hands its room back for the next receive while its deletes run, and when
settles back up, delivery room is held and receives wait), and its turn to poll (the
process's poll slots, from the descriptor budget; queues take turns when there are more
queues than slots). Waiting for any of them beats: a slow target or a long queue of turns is
not a dead loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio

WAIT_SLICE_SECONDS = 5.0


def _nobody() -> None:
    pass


async def _acquire(acquire: Callable[[], Awaitable[None]], beat: Callable[[], None]) -> None:
    """`acquire()` in slices of WAIT_SLICE_SECONDS, beating between them."""
    while True:
        with anyio.move_on_after(WAIT_SLICE_SECONDS):
            await acquire()
            return
        beat()


async def _take(tokens: anyio.Semaphore, count: int, beat: Callable[[], None]) -> int:
    """`count` tokens, taken as they free up (what is free now without a timer); cancelled
    while waiting, what was taken is handed back."""
    taken = 0
    try:
        while taken < count:
            try:
                tokens.acquire_nowait()
            except anyio.WouldBlock:
                await _acquire(tokens.acquire, beat)
            taken += 1
    except BaseException:
        for _ in range(taken):
            tokens.release()
        raise
    return taken


class Room:
    def __init__(
        self, concurrency: int, batch_size: int, polls: anyio.CapacityLimiter | None
    ) -> None:
        self._concurrency = concurrency
        self._tokens = anyio.Semaphore(concurrency)
        self._settling = anyio.Semaphore(concurrency)
        self._batch = batch_size
        self._polls = polls

    async def take(self, beat: Callable[[], None]) -> int:
        """Wait for room for one message, then take what else is free, up to a batch."""
        taken = await _take(self._tokens, 1, beat)
        while taken < self._batch:
            try:
                self._tokens.acquire_nowait()
            except anyio.WouldBlock:
                break
            taken += 1
        return taken

    async def take_whole(self, beat: Callable[[], None]) -> int:
        """Wait for room for a whole batch."""
        return await _take(self._tokens, self._batch, beat)

    def free(self, count: int) -> bool:
        """Whether `count` messages' room and a poll slot are free now (nothing taken)."""
        slots = self._polls is None or self._polls.available_tokens >= 1
        return slots and self._tokens.value >= count

    def busy(self) -> int:
        """Messages taken and not yet delivered."""
        return self._concurrency - self._tokens.value

    def give(self, count: int) -> None:
        for _ in range(count):
            self._tokens.release()

    async def hand_over(self, count: int) -> None:
        """`count` messages' delivery has ended: once there is settling room for them, their
        delivery room goes back to the next receive."""
        await _take(self._settling, count, _nobody)
        self.give(count)

    def settled(self, count: int) -> None:
        for _ in range(count):
            self._settling.release()

    @asynccontextmanager
    async def poll_slot(self, beat: Callable[[], None]) -> AsyncIterator[None]:
        if self._polls is None:
            yield
            return
        polls, owner = self._polls, object()
        try:
            polls.acquire_on_behalf_of_nowait(owner)
        except anyio.WouldBlock:
            await _acquire(lambda: polls.acquire_on_behalf_of(owner), beat)
        try:
            yield
        finally:
            polls.release_on_behalf_of(owner)
