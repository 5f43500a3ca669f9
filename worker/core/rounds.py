"""FIFO groups in rounds (SPEC.md, FIFO): a group's messages one at a time, in order; a round
takes the head of every group, side by side; a group whose head was not accepted stops there,
the rest of it handed back to come after. The daemon's pipeline and `parked replay --to
target` both deliver FIFO groups this way (pure: no I/O, no clock)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupRounds(Generic[T]):
    def __init__(self, items: Iterable[T], group_of: Callable[[T], Hashable]) -> None:
        self._group_of = group_of
        self._groups: dict[Hashable, deque[T]] = {}
        for item in items:
            self._groups.setdefault(group_of(item), deque()).append(item)

    def __bool__(self) -> bool:
        return bool(self._groups)

    def drop(self, unfit: Callable[[T], bool]) -> list[T]:
        """Every group whose next message is `unfit`, whole, in order: they are not delivered."""
        dropped = [group for group, items in self._groups.items() if unfit(items[0])]
        return [item for group in dropped for item in self._groups.pop(group)]

    def next_round(self) -> list[T]:
        """The head of every group (taken off it): deliver these side by side."""
        heads = [items.popleft() for items in self._groups.values()]
        self._groups = {g: items for g, items in self._groups.items() if items}
        return heads

    def refused(self, head: T) -> list[T]:
        """`head` (of the last round) was not accepted: the rest of its group, in order, taken
        off the rounds (they wait for it)."""
        return list(self._groups.pop(self._group_of(head), ()))
