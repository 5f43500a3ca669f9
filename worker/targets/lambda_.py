"""Lambda target: Invoke, RequestResponse by default so the worker sees the real outcome."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

from worker.aws.clients import Client
from worker.aws.trace import traced
from worker.core.errors import DeliveryError, ErrorKind
from worker.core.jsontext import loads
from worker.core.limits import LAMBDA_MAX_ASYNC_BYTES, LAMBDA_MAX_SYNC_BYTES
from worker.settings import LambdaTarget
from worker.targets.base import (
    HEADER_TRACE_LIMIT,
    Delivery,
    HandOff,
    Result,
    deliver_each,
    key_hash,
    short_name,
    too_large,
    trace_of,
)

CLIENT_CONTEXT_MAX = 3583  # bytes of base64, as Lambda takes it


def client_context(delivery: Delivery) -> str:
    """`{"custom": {"retry-worker": {idempotency_key, attempt, queue}}}`, base64, within
    Lambda's 3,583 bytes: a key too long for it is replaced by its SHA-256 (hex). The function
    reads it as `context.client_context.custom["retry-worker"]`. Lambda passes no client
    context to `Event` invocations, so those get none (the payload is never changed for it)."""
    key = delivery.idempotency_key
    for candidate in (key, key_hash(key)):
        ours = {"idempotency_key": candidate, "attempt": delivery.attempt, "queue": delivery.queue}
        text = json.dumps({"custom": {"retry-worker": ours}}, separators=(",", ":"))
        encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
        if len(encoded) <= CLIENT_CONTEXT_MAX:
            return encoded
    raise AssertionError("a hashed key always fits")  # pragma: no cover


def function_error(payload: bytes) -> tuple[str | None, str]:
    """A failed invocation's `errorType` and `errorMessage` (Lambda's error payload); (None,
    "") when the payload is not that shape. DeliveryError keeps them clean and short."""
    try:
        data = loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, ""
    if not isinstance(data, dict):
        return None, ""
    kind, message = data.get("errorType"), data.get("errorMessage")
    return (
        kind if isinstance(kind, str) and kind else None,
        message if isinstance(message, str) else "",
    )


class LambdaInvoker(HandOff):
    service = "lambda"
    operation = "Invoke"
    one_per_call = True

    def __init__(self, client: Client, settings: LambdaTarget) -> None:
        self._client = client
        self._function = settings.function
        self._type = settings.invocation_type
        self.name = short_name(settings.function)
        # An async invoke is accepted, then fails on its own: its failures come back as new
        # DLQ messages (the loop guard watches for that).
        self.hands_off = settings.invocation_type == "Event"
        self._max_payload = LAMBDA_MAX_ASYNC_BYTES if self.hands_off else LAMBDA_MAX_SYNC_BYTES

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        return await deliver_each(batch, self._invoke)

    async def _invoke(self, delivery: Delivery) -> None:
        payload = delivery.body.encode("utf-8")
        if len(payload) > self._max_payload:
            raise too_large(len(payload), self._max_payload, f"Lambda {self._type} payload")
        extra = {} if self.hands_off else {"ClientContext": client_context(delivery)}
        with traced(trace_of(delivery, HEADER_TRACE_LIMIT)):  # the invocation joins the trace
            response = await self._client.invoke(
                FunctionName=self._function, InvocationType=self._type, Payload=payload, **extra
            )
        answer = response.get("Payload")
        # read it to hand the connection back to the pool (and for a function error, its cause)
        text = await answer.read() if answer is not None else b""
        if response.get("FunctionError"):
            # 200 with X-Amz-Function-Error: the function ran and failed; the payload says how.
            error_type, message = function_error(text)
            raise DeliveryError(
                ErrorKind.RETRYABLE,
                f"FunctionError.{response['FunctionError']}",
                message,
                error_type=error_type,
            )
        expected = 202 if self._type == "Event" else 200
        if response.get("StatusCode") != expected:
            raise DeliveryError(
                ErrorKind.RETRYABLE, f"UnexpectedStatus.{response.get('StatusCode')}"
            )
