"""A queue's idempotency key (SPEC.md, Idempotency): its `idempotency_key` expression over the
message view, the same for the daemon's deliveries and `parked replay --to target`, so a
target that deduplicates sees one key for one message however it comes back."""

from __future__ import annotations

import structlog

from worker.decisions.expressions import ExpressionFailed, Transform
from worker.decisions.view import View

log = structlog.get_logger("worker.decisions.keys")


class IdempotencyKey:
    def __init__(self, queue: str, expression: str) -> None:
        self.expression = expression
        self._transform = Transform(expression)
        self._log = log.bind(queue=queue)

    def of(self, view: View) -> str | None:
        """The key; None (the DLQ message id stands in) when the expression gives null or
        fails, said in a log line."""
        try:
            return self._transform.apply(view)
        except ExpressionFailed as exc:
            self._log.warning(
                "idempotency_key_failed",
                message_id=view["message_id"],
                error=exc.code,
                fallback="message_id",
            )
            return None
