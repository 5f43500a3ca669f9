"""Python hooks the decision tests configure (`tests.decision_hooks:NAME`)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

from worker.hooks import Defer, Deliver, Message, Park

# A hook that holds its thread until the test lets it go (set by the test).
release = threading.Event()
running = 0
most_running = 0
calls = 0
_lock = threading.Lock()


def reset() -> None:
    global running, most_running, calls
    release.clear()
    running = most_running = calls = 0


def park_vip(message: Message) -> Park | None:
    body = message["body"]
    if isinstance(body, dict) and body.get("customer") == "vip":
        return Park("vip_review", "VipCustomer")
    return None


async def rewrite(message: Message) -> Deliver:
    body = message["body"]
    return Deliver(payload=json.dumps({"rewritten": body["id"], "attempt": message["attempt"]}))


def odd_payload(message: Message) -> Deliver | None:
    """A datetime in the payload for the message that asks for it (JSON cannot hold it)."""
    body = message["body"]
    if isinstance(body, dict) and body.get("odd"):
        return Deliver(payload={"at": datetime(2026, 12, 6, tzinfo=UTC)})  # type: ignore[arg-type]
    return None


def explode(message: Message) -> None:
    raise ValueError("the ledger said no")


def defer_always(message: Message) -> Defer:
    return Defer(120, "ledger_maintenance")


def wrong_answer(message: Message) -> Any:
    return {"action": "park"}


def held(message: Message) -> None:
    """Blocks until `release` is set, counting how many run at once."""
    global running, most_running, calls
    with _lock:
        calls += 1
        running += 1
        most_running = max(most_running, running)
    try:
        release.wait(60)
    finally:
        with _lock:
            running -= 1
