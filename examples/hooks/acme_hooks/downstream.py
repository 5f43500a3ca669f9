"""Don't resubmit while the ledger is down: ask its health endpoint first, and defer while it
does not answer 200.

    queues:
      orders:
        hook: acme_hooks.downstream:wait_for_ledger
        hook_timeout_seconds: 5

The endpoint comes from `ACME_LEDGER_HEALTH_URL`. A sync hook: the daemon runs it on a thread
of the queue's own, so the blocking call holds nothing else up. The answer is cached for a few
seconds, so a backlog of a thousand messages asks once, not a thousand times.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request

from worker.hooks import Defer, Message

CACHE_SECONDS = 5.0
DEFER_SECONDS = 300

_lock = threading.Lock()
_checked: tuple[float, bool] | None = None  # (monotonic time, healthy)


def ledger_healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - configured URL
            return bool(response.status == 200)
    except urllib.error.HTTPError as answer:  # 503 and friends: answered, not healthy
        answer.close()
        return False
    except (urllib.error.URLError, OSError):
        return False


def _healthy() -> bool:
    global _checked
    url = os.environ["ACME_LEDGER_HEALTH_URL"]
    with _lock:
        now = time.monotonic()
        if _checked is None or now - _checked[0] > CACHE_SECONDS:
            _checked = (now, ledger_healthy(url))
        return _checked[1]


def forget() -> None:
    """Drop the cached answer (tests)."""
    global _checked
    with _lock:
        _checked = None


def wait_for_ledger(message: Message) -> Defer | None:
    if _healthy():
        return None  # deliver
    return Defer(DEFER_SECONDS, "ledger_down")
