"""`python -m tests.stamped run --config F`: the daemon, each AWS request stamped with when it
left (header `X-Sent-At`, the daemon's `time.monotonic()`: one clock for every process on
Linux). The emulator's proxy records that instead of when it read the request, so a test that
counts calls in wall-clock windows measures the daemon's pacing, not how late a busy test
process got round to reading (the fleet tests run beside others in `make test`).

The stamp is taken when botocore hands the request to its HTTP layer (`before-send`): a wait
for a free pooled connection after that is not in it. The daemon's pools hold a connection
per delivery it may have in flight, so at these tests' rates none waits."""

from __future__ import annotations

import time
from typing import Any

from aiobotocore.session import AioSession

from worker.emulator.journal import SENT_AT


def stamp(request: Any, **_: Any) -> None:
    """A `before-send` handler: the request says when it left."""
    request.headers[SENT_AT] = repr(time.monotonic())


def stamp_every_session() -> None:
    init = AioSession.__init__

    def init_stamping(self: AioSession, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.register("before-send", stamp)  # every client of the session copies its handlers

    AioSession.__init__ = init_stamping  # type: ignore[method-assign]


if __name__ == "__main__":
    from worker.cli import main

    stamp_every_session()
    raise SystemExit(main())
