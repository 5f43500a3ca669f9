"""The queue list at a glance: each target's breaker from the coordination table, and each
queue's own parked count when DLQs share a parking queue."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import anyio

from worker.aws.errors import error_code
from worker.console.state import Console
from worker.fleet.table import CoordinationTable
from worker.ops.context import home_account, parking_place


async def breakers(console: Console) -> tuple[dict[str, Any], str | None]:
    coordination = console.settings.coordination
    if coordination.backend != "dynamodb" or not coordination.table:
        return {}, None
    try:
        table = CoordinationTable(await console.clients.get("dynamodb"), coordination.table)
        return (await table.read()).breakers, None
    except Exception as exc:  # noqa: BLE001 - the page says the table did not answer
        return {}, error_code(exc)


def breaker_text(note: Any, now: float) -> str:
    if note is None:
        return "closed"
    if note.is_open and note.open_until > now:
        until = datetime.fromtimestamp(note.open_until, UTC).strftime("%H:%M:%S")
        return f"open until {until} UTC (trips {note.trips})"
    return "half-open" if note.is_open else "closed"


async def own_counts(console: Console, rows: list[dict[str, Any]]) -> bool:
    """Queues that share a parking queue: each its own count and oldest, from the parking
    queue's snapshot (one read, split by the DLQ each message came from; started here when
    there is none, all of them at once: the page waits a second at most). `own_note` says how
    far it can be trusted. Returns whether a read is still under way."""
    sharing = Counter(row["parking_queue"] for row in rows if "error" not in row)
    # a queue whose DLQ cannot be read shares its parking queue all the same (its messages
    # may be parked there): known by where the configuration says its parking queue is
    settings = console.settings
    home = home_account(settings, rows)
    places = {name: parking_place(settings, q, home) for name, q in settings.queues.items()}
    named = Counter(places.values())
    mine = [
        r
        for r in rows
        if "error" not in r and (sharing[r["parking_queue"]] > 1 or named[places[r["queue"]]] > 1)
    ]
    reading = False

    async def count(row: dict[str, Any]) -> None:
        nonlocal reading
        ctx = await console.context(row["queue"])
        snapshot = await console.snapshot(ctx)
        times = [e.meta.get("parked-at", "") for e in snapshot.entries]
        row["own"] = len(snapshot.entries)
        row["own_oldest"] = min((t for t in times if t), default=None)
        if snapshot.finished is None:
            reading = True
            row["own_note"] = f"reading the shared parking queue: {snapshot.read} read so far"
        elif snapshot.short or snapshot.error:
            row["own_note"] = f"at least: {snapshot.short or snapshot.error}"
        else:
            age = int(snapshot.age_seconds)
            row["own_note"] = f"of {row['parked']} in the shared parking queue, as read {age} s ago"

    async with anyio.create_task_group() as tg:
        for row in mine:
            tg.start_soon(count, row)
    return reading
