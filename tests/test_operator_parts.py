"""Pieces of the operator commands without the emulator: a replay's start-time cutoff, the
summary's streaming counts (issue 18)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from worker.core.parking import ParkedView
from worker.ops.filters import Filters
from worker.ops.reading import Selection, Tally
from worker.ops.records import Record


class Keeper:
    def __init__(self) -> None:
        self.kept: list[str] = []

    def keep(self, record: Record) -> None:
        self.kept.append(record.message_id)

    def finish(self) -> None:
        pass


def _record(mid: str, parked_at: str, reason: str = "max_attempts") -> Record:
    meta = {"reason": reason, "error": "E", "parked-at": parked_at, "source-queue": "q"}
    return Record(mid, "r", "b", {}, None, ParkedView(meta, "b", {}))


def test_a_replay_to_the_dlq_leaves_what_was_parked_after_it_started():
    reader = Keeper()
    batch = [
        _record("old", "2026-12-03T10:00:00+00:00"),
        _record("same-second", "2026-12-03T10:05:00+00:00"),
        _record("parked-again", "2026-12-03T10:05:01+00:00"),
    ]
    ctx = SimpleNamespace(dlq=SimpleNamespace(url="q"))
    selection = Selection(reader, ctx, Filters.build(), "2026-12-03T10:05:00+00:00")  # type: ignore[arg-type]
    assert [r.message_id for r in selection.choose(batch)] == ["old", "same-second"]
    assert reader.kept == ["parked-again"]
    assert selection.later == 1
    everything = Selection(reader, ctx, Filters.build())  # type: ignore[arg-type]
    assert everything.choose(batch) == batch


def test_the_summary_counts_without_keeping_every_record():
    tally = Tally(datetime(2026, 12, 3, 12, tzinfo=UTC))
    for i in range(100_000):
        hour = 10 + i % 2
        tally.add(
            {
                "reason": "max_attempts" if i % 3 else "manual_review",
                "error": "E",
                "parked-at": f"2026-12-03T{hour}:30:00+00:00",
            }
        )
    result = tally.result("orders")
    assert result["total"] == 100_000
    assert result["by_reason"] == {"max_attempts": 66_666, "manual_review": 33_334}
    assert (result["oldest"], result["newest"]) == (
        "2026-12-03T10:30:00+00:00",
        "2026-12-03T11:30:00+00:00",
    )
    assert result["by_age"] == {"1h-1d": 50_000, "<1h": 50_000}
    assert not hasattr(tally, "records")  # counters only
