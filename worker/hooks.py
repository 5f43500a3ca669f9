"""The hook API: what a queue's Python hook receives and may return (SPEC.md, Decisions).

A hook is named in the configuration as `package.module:function`::

    from worker.hooks import Defer, Deliver, Message, Park

    def decide(message: Message) -> Deliver | Defer | Park | None:
        if message["body"] and message["body"].get("amount", 0) > 10_000:
            return Park("manual_review")
        return None  # go on and deliver

It may be `async def`. `message` is the message view, read-only: `queue`, `message_id`,
`attempt`, `receive_count`, `age_seconds`, `group_id`, `source_arn`, `body` (the payload
parsed as JSON, or None), `text` (the payload the target would get, after the queue's
transform), `dlq_body`, `attributes`, `error` (`{code, message}` the DLQ recorded, or None).

- `Deliver(payload=None)`: deliver now; `payload` (text) replaces what the target gets.
- `Defer(seconds, reason)`: try again after `seconds` (1..43200); counts as an attempt.
- `Park(reason, error=None)`: park now; `reason` is `[a-z0-9_]{1,40}`.
- `None`: go on and deliver.

A raised exception is a retryable failure with the error `HookError.<ExceptionType>`; a hook
that runs past `hook_timeout_seconds` is `HookTimeout`. Neither loses the message. A sync hook
runs on a thread of its queue's own pool, so it never blocks the event loop.

This module is the stable, public part of `worker`: it imports nothing else of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Decision", "Defer", "Deliver", "Message", "Park"]

Message = Mapping[str, Any]


@dataclass(frozen=True)
class Deliver:
    """Deliver now, optionally a new payload (text) instead of the current one."""

    payload: str | None = None


@dataclass(frozen=True)
class Defer:
    """Try again after `seconds`; counts as an attempt, like any retry."""

    seconds: float
    reason: str = "deferred"


@dataclass(frozen=True)
class Park:
    """Park now with `reason` (and, optionally, an error code for `retry-worker.error`). The
    daemon's own outcome of parking is this class too (`worker.core.outcomes`)."""

    reason: str
    error: str | None = None


Decision = Deliver | Defer | Park
