"""`parked replay --transform EXPR`: fix the payload on the way back (SPEC.md, Decisions).

EXPR is JMESPath over the parked message's view (the daemon's own view, built from the
original body and attributes kept in the parking queue). The parked message and the backup
keep the original; a message the expression fails on (or gives null for) stays parked and is
reported with its `TransformFailed.*` code.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from jmespath.exceptions import JMESPathError

from worker.decisions.expressions import ExpressionFailed, Transform
from worker.decisions.view import build_view
from worker.ops.records import Record

PREVIEW = 200  # characters of the dry run's before and after


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

    def _view(self, record: Record) -> dict[str, object]:
        return build_view(self._queue, record.original(), 1, time.time(), unwrap=self._unwrap)

    def before(self, record: Record) -> str:
        """The payload as it is (what the target would get without the transform)."""
        return str(self._view(record)["text"])

    def __call__(self, record: Record) -> str:
        """The new payload; raises ExpressionFailed."""
        return self._transform.apply(self._view(record))


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


def key_of(keyer: Reshape | None, record: Record) -> str | None:
    if keyer is None:
        return None
    try:
        return keyer(record)
    except ExpressionFailed:
        return None  # the message id stands in, as in the daemon


def example(reshape: Reshape, record: Record) -> tuple[str, str]:
    try:
        after = reshape(record)
    except ExpressionFailed as exc:
        after = f"(stays parked: {exc})"
    return reshape.before(record), after


def preview(text: str) -> str:
    return text if len(text) <= PREVIEW else text[:PREVIEW] + "…"
