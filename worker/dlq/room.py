"""A queue's room: how many messages it may take now (its `concurrency`, one token a message
from receive until its delivery ends), how many may be settling at once (as many again: a
delivered batch hands its room back for the next receive while its deletes run, and when
settles back up, delivery room is held and receives wait), and its turn to poll (the
process's poll slots, from the descriptor budget; queues take turns when there are more
queues than slots). Waiting for any of them beats: a slow target or a long queue of turns is
not a dead loop. What a receive takes is a `Taken`: the one place its tokens go back."""

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


class Taken:
    """The room one receive took: `count` messages' delivery room, then (once their delivery
    has ended) their settling room. Every token goes back exactly once, through here: what
    the receive did not need at once (`keep`), the delivery room at `hand_over`, and whatever
    is still held at `end` (called again, it does nothing)."""

    def __init__(self, room: Room, count: int) -> None:
        self._room = room
        self.count = count
        self.handed_over = False
        self._ended = False

    def keep(self, count: int) -> None:
        """Only `count` of it is needed (a half-open breaker's probes, what the receive gave
        back): the rest goes back now."""
        assert 0 <= count <= self.count, (count, self.count)
        assert not self.handed_over
        assert not self._ended
        self._room._give(self.count - count)
        self.count = count

    async def hand_over(self) -> None:
        """Delivery has ended: once there is settling room for these messages, their delivery
        room goes back to the next receive (cancelled while waiting: nothing changes)."""
        assert not self.handed_over
        assert not self._ended
        await _take(self._room._settling, self.count, _nobody)
        self._room._give(self.count)
        self.handed_over = True

    def end(self) -> None:
        """Settled, or given up: what is still held goes back."""
        if self._ended:
            return
        self._ended = True
        if self.handed_over:
            for _ in range(self.count):
                self._room._settling.release()
        else:
            self._room._give(self.count)


class Room:
    def __init__(
        self, concurrency: int, batch_size: int, polls: anyio.CapacityLimiter | None
    ) -> None:
        self._concurrency = concurrency
        self._tokens = anyio.Semaphore(concurrency)
        self._settling = anyio.Semaphore(concurrency)
        self._batch = batch_size
        self._polls = polls

    async def take(self, beat: Callable[[], None]) -> Taken:
        """Wait for room for one message, then take what else is free, up to a batch."""
        taken = await _take(self._tokens, 1, beat)
        while taken < self._batch:
            try:
                self._tokens.acquire_nowait()
            except anyio.WouldBlock:
                break
            taken += 1
        return Taken(self, taken)

    async def take_whole(self, beat: Callable[[], None]) -> Taken:
        """Wait for room for a whole batch."""
        return Taken(self, await _take(self._tokens, self._batch, beat))

    def free(self, count: int) -> bool:
        """Whether `count` messages' room and a poll slot are free now (nothing taken)."""
        slots = self._polls is None or self._polls.available_tokens >= 1
        return slots and self._tokens.value >= count

    def busy(self) -> int:
        """Messages taken and not yet delivered."""
        return self._concurrency - self._tokens.value

    def _give(self, count: int) -> None:
        for _ in range(count):
            self._tokens.release()

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
