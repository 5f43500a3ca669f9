"""`parked replay --transform EXPR`: fix the payload on the way back (SPEC.md, Decisions).

EXPR is JMESPath over the parked message's view (the daemon's own view, built from the
original body and attributes kept in the parking queue). The parked message and the backup
keep the original; a message the expression fails on (or gives null for) stays parked and is
reported with its `TransformFailed.*` code.
"""

from __future__ import annotations

import time

from jmespath.exceptions import JMESPathError

from worker.decisions.expressions import Transform
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


def preview(text: str) -> str:
    return text if len(text) <= PREVIEW else text[:PREVIEW] + "…"
