"""How long a read's receive holds its messages (SQS's visibility timeout): long enough that
nothing comes back before the read is over, never longer than asked.

At least `least` seconds (30 minutes), and long enough for what is read ahead (a batch a
receiver and a batch a taker) to wait its turn at the `rate` it is acted on. Once the read
knows its pace and the queue's count: to the projected end, read-ahead included, twice over
plus a margin (a replay at `--rate 10` through 50,000 messages runs 83 minutes) — at most
`most` (the 12 hours SQS allows; the console's 60 s)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

HOLD_SECONDS = 1800  # the least hold; released at the end anyway
HOLD_MARGIN_SECONDS = 600
PACE_AFTER = 100  # messages read before the pace is trusted


@dataclass
class Holds:
    least: int
    most: int
    ahead: int  # messages read and not yet acted on, at most
    monotonic: Callable[[], float]
    rate: float | None = None  # messages a second the read is acted on at most
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.monotonic()

    def seconds(self, read: int, expected: int | None) -> int:
        least = float(self.least)
        if self.rate is not None:  # the read-ahead waits for the rate, however far the read is
            least = max(least, 2 * self.ahead / self.rate + HOLD_MARGIN_SECONDS)
        if expected is None or read < PACE_AFTER:
            return int(min(least, self.most))
        per_message = (self.monotonic() - self.started) / read
        left = (max(0, expected - read) + self.ahead) * per_message
        return int(min(self.most, max(least, 2 * left + HOLD_MARGIN_SECONDS)))
