"""Pieces of the operator commands without the emulator: a replay's start-time cutoff, the
summary's streaming counts (issue 18)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from worker.core.parking import ParkedView
from worker.ops.filters import Filters
from worker.ops.reading import Selection
from worker.ops.records import Record
from worker.ops.tally import Tally


class Keeper:
    def __init__(self) -> None:
        self.kept: list[str] = []

    def keep(self, record: Record) -> None:
        self.kept.append(record.message_id)

    def finish(self, *, enough: bool = False) -> None:
        pass


def _record(mid: str, parked_at: str, reason: str = "max_attempts", source: str = "q") -> Record:
    meta = {"reason": reason, "error": "E", "parked-at": parked_at, "source-queue": source}
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


def test_a_failure_inside_task_groups_is_said_by_its_first_cause():
    """Chunks moving at once fail together: the page, the audit line and the command say the
    first cause, not "unhandled errors in a TaskGroup"."""
    from botocore.exceptions import ClientError

    from worker.aws.errors import first_failure, innermost, said

    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject")
    group = ExceptionGroup("tasks", [ExceptionGroup("inner", [denied, ValueError("x")])])
    assert first_failure(group) is denied
    assert said(group).startswith("AccessDenied: ")
    assert innermost(group) is group.exceptions[0], "a group of several stays for innermost"


@pytest.mark.anyio
async def test_a_snapshot_takes_every_batch_its_receivers_read_ahead():
    """The receivers had read all 24 (the queue's count) while the page had taken only the
    first batch: the page stopped there, and the quiet queue's 4 in the next batch showed
    as 0 messages."""
    from worker.console.snapshot import Snapshot, _fill

    class ReadAhead:
        read = 0
        incomplete = None

        def keep(self, record: Record) -> None:
            pass

        async def batches(self):
            self.read = 24  # every message read already, two batches still on their way
            yield [
                _record(f"o{i}", "2026-12-03T10:00:00+00:00", source="orders") for i in range(20)
            ]
            yield [
                _record(f"b{i}", "2026-12-03T10:00:00+00:00", source="billing") for i in range(4)
            ]

    snapshot = Snapshot("parked", 24, dlqs=("orders", "billing"))
    await _fill(ReadAhead(), None, snapshot)  # type: ignore[arg-type]
    assert snapshot.kept == {"orders": 20, "billing": 4}
    assert snapshot.read == 24


def test_a_summary_counts_a_thousand_error_types_and_folds_the_rest():
    from datetime import UTC, datetime

    from worker.ops.tally import OTHER_KINDS

    tally = Tally(datetime.now(UTC))
    for i in range(1_005):
        tally.add({"reason": "max_attempts", "error-type": f"Type{i}"})
    tally.add({"reason": "max_attempts"})  # parked without a type, when the room is gone
    counts = tally.result("orders")["by_error_type"]
    assert len(counts) == 1_001
    assert counts[OTHER_KINDS] == 6


def test_what_a_target_said_is_printed_escaped_never_acted_on():
    from worker.ops.tally import shown

    assert shown("Boom") == "Boom"
    assert shown("red \x1b[31m\nnext line\r") == "red \\x1b[31m\\nnext line\\r"
