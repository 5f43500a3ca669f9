"""The X-Ray trace header on calls whose API has no field for it (SPEC.md, Trace continuity).

Lambda `Invoke`, SNS `Publish`/`PublishBatch` and Step Functions `RedriveExecution` take the
trace as the `X-Amzn-Trace-Id` HTTP header. A delivery sets it for its own call with
`traced(header)`; a handler registered on the client adds it to exactly that request (a
context variable: concurrent deliveries each keep their own).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

HEADER = "X-Amzn-Trace-Id"
# service -> the operations that take the trace as the HTTP header
CARRIED = {
    "lambda": ("Invoke",),
    "sns": ("Publish", "PublishBatch"),
    "stepfunctions": ("RedriveExecution",),
}

_current: ContextVar[str | None] = ContextVar("retry_worker_trace", default=None)


@contextmanager
def traced(header: str | None) -> Iterator[None]:
    """Calls made inside carry `header` (none when None)."""
    token = _current.set(header)
    try:
        yield
    finally:
        _current.reset(token)


def _add_header(params: dict[str, Any], **_: Any) -> None:
    if (header := _current.get()) is not None:
        params["headers"][HEADER] = header


def carry_traces(client: Any, service: str) -> None:
    """Register the handler on a client of `service` (once per client)."""
    # the service's event name (`sfn` for stepfunctions), as botocore emits it
    event_service = client.meta.service_model.service_id.hyphenize()
    for operation in CARRIED.get(service, ()):
        client.meta.events.register(f"before-call.{event_service}.{operation}", _add_header)
