"""`parked replay --transform EXPR`: fix the payload on the way back (SPEC.md, Decisions).

EXPR is JMESPath over the parked message's view (the daemon's own view, built from the
original body and attributes kept in the parking queue). The parked message and the backup
keep the original; a message the expression fails on (or gives null for) stays parked and is
reported with its `TransformFailed.*` code.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from jmespath.exceptions import JMESPathError

from worker.decisions.expressions import ExpressionFailed, Transform
from worker.decisions.view import View, build_view
from worker.ops.records import Record

PREVIEW = 200  # characters of the dry run's before and after


def record_view(queue: str, record: Record, *, unwrap: bool) -> View:
    """The daemon's view of a parked message (its original body and attributes, its DLQ
    message id), as on a first attempt."""
    original = dataclasses.replace(record.original(), message_id=record.dlq_message_id)
    return build_view(queue, original, 1, time.time(), unwrap=unwrap)


class Reshape:
    def __init__(self, queue: str, expression: str, *, unwrap: bool) -> None:
        try:
            self._transform = Transform(expression)
        except JMESPathError as exc:
            detail = " ".join(str(exc).split())
            raise ValueError(f"--transform: not a valid JMESPath expression: {detail}") from exc
        self.expression = expression
        self._queue = queue
        self._unwrap = unwrap  # kind: auto (its payload is inside the DLQ message's envelope)

    def _view(self, record: Record) -> View:
        return record_view(self._queue, record, unwrap=self._unwrap)

    def before(self, record: Record) -> str:
        """The payload as it is (what the target would get without the transform)."""
        return str(self._view(record)["text"])

    def __call__(self, record: Record) -> str:
        """The new payload; raises ExpressionFailed."""
        return self._transform.apply(self._view(record))


class Edited(Reshape):
    """A body a person wrote for the one message they chose (the console's "edit and
    replay"): what is sent instead of the original, whatever the original was."""

    def __init__(self, queue: str, body: str, *, unwrap: bool) -> None:
        self.expression = "edited body"
        self.body = body
        self._queue = queue
        self._unwrap = unwrap

    def __call__(self, record: Record) -> str:
        return self.body


def reshaped(
    records: Sequence[Record], reshape: Reshape | None
) -> tuple[list[tuple[Record, str]], dict[str, str]]:
    """Each record with the payload to send (the original, or `--transform`'s), and the codes
    of those the transform failed on (they stay parked)."""
    ready, failed = [], {}
    for r in records:
        assert r.view is not None
        try:
            ready.append((r, reshape(r) if reshape is not None else r.view.body))
        except ExpressionFailed as exc:
            failed[r.message_id] = exc.code
    return ready, failed


def example(reshape: Reshape, record: Record) -> tuple[str, str]:
    try:
        after = reshape(record)
    except ExpressionFailed as exc:
        after = f"(stays parked: {exc})"
    return reshape.before(record), after


def preview(text: str) -> str:
    return text if len(text) <= PREVIEW else text[:PREVIEW] + "…"
