"""What `parked summary` and `parked list` say of the messages they read: counts kept as the
messages stream past (bounded memory), and one line a message."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any, TextIO

from worker.core.parking import error_type_of
from worker.ops.context import QueueContext
from worker.ops.filters import Filters
from worker.ops.reading import number, selected
from worker.ops.records import Record
from worker.ops.scan import QueueReader

MAX_KINDS = 1000  # distinct reasons, errors or types counted; more are counted as OTHER_KINDS
OTHER_KINDS = "(more kinds)"
AGE_BUCKETS = ((3600, "<1h"), (86400, "1h-1d"), (7 * 86400, "1d-7d"))
BODY_PREVIEW = 120


def _age_bucket(parked_at: str, now: datetime) -> str:
    try:
        age = (now - datetime.fromisoformat(parked_at)).total_seconds()
    except ValueError:
        return "unknown"
    return next((name for limit, name in AGE_BUCKETS if age < limit), ">7d")


class Tally:
    """The summary's counts, kept as messages stream past (bounded memory: counters, not
    every metadata record)."""

    def __init__(self, now: datetime) -> None:
        self._now = now
        self.total = 0
        self.reasons: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.error_types: Counter[str] = Counter()
        self.ages: Counter[str] = Counter()
        self.oldest: str | None = None
        self.newest: str | None = None

    def add(self, meta: dict[str, str]) -> None:
        self.total += 1
        counted(self.reasons, meta.get("reason", "unknown"))
        counted(self.errors, meta.get("error", "unknown"))
        counted(self.error_types, error_type_of(meta))
        parked_at = meta.get("parked-at", "")
        self.ages[_age_bucket(parked_at, self._now)] += 1
        if parked_at:
            self.oldest = min(self.oldest or parked_at, parked_at)
            self.newest = max(self.newest or parked_at, parked_at)

    def result(self, name: str) -> dict[str, Any]:
        return {
            "queue": name,
            "total": self.total,
            "by_reason": dict(self.reasons.most_common()),
            "by_error": dict(self.errors.most_common()),
            "by_error_type": dict(self.error_types.most_common()),
            "by_age": dict(self.ages),
            "oldest": self.oldest,
            "newest": self.newest,
        }


def counted(counter: Counter[Any], key: Any) -> None:
    """One more of `key`, in at most MAX_KINDS keys (a hook's error can differ per message:
    memory stays bounded whatever the queue holds)."""
    if key not in counter and len(counter) >= MAX_KINDS:
        key = OTHER_KINDS if not isinstance(key, tuple) else (OTHER_KINDS,) * len(key)
    counter[key] += 1


def print_summary(summary: dict[str, Any], out: TextIO) -> None:
    out.write(f"{summary['total']} parked messages from {summary['queue']}\n")
    for key in ("by_reason", "by_error", "by_error_type", "by_age"):
        for value, count in summary[key].items():
            out.write(f"  {key[3:].replace('_', ' '):<10} {shown(value):<40} {count}\n")
    if summary["total"]:
        out.write(f"  oldest  {summary['oldest']}\n  newest  {summary['newest']}\n")


async def summary(reader: QueueReader, ctx: QueueContext, filters: Filters) -> dict[str, Any]:
    tally = Tally(datetime.now(UTC))
    async for batch in selected(reader, ctx, filters):
        for record in batch:
            if record.view is not None:
                tally.add(record.view.meta)
            reader.keep(record)
    return tally.result(ctx.name)


def shown(value: object) -> str:
    """A value on one line of a terminal: what is not printable (a line break, an escape
    sequence a target put in its error) is shown escaped, never acted on."""
    text = str(value)
    return (
        text
        if text.isprintable()
        else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    )


def list_line(record: Record, *, as_json: bool, show_body: bool) -> str:
    meta = record.view.meta if record.view else {}
    row = {
        "id": record.message_id,
        "reason": meta.get("reason"),
        "error": meta.get("error"),
        "error_type": meta.get("error-type"),
        "error_message": meta.get("error-message"),
        "attempts": int(meta.get("attempts", "0") or 0),
        "parked_at": meta.get("parked-at"),
        "kept": number(meta.get("kept")),  # times the keeper re-parked it
        "size": len(record.view.body.encode("utf-8")) if record.view else record.size,
    }
    if show_body and record.view is not None:
        row["body"] = record.view.body[:BODY_PREVIEW]
    if as_json:
        return json.dumps(row, ensure_ascii=False)
    text = " ".join(
        shown(row[k]) for k in ("id", "reason", "error", "error_type", "attempts", "parked_at")
    )
    text += f" {row['size']}B" + (f" kept {row['kept']}" if row["kept"] else "")
    return text + (f" {row['body']!r}" if "body" in row else "")


async def listing(
    reader: QueueReader, ctx: QueueContext, filters: Filters, out: TextIO, **style: bool
) -> None:
    async for batch in selected(reader, ctx, filters):
        for record in batch:
            out.write(list_line(record, **style) + "\n")
            reader.keep(record)
