"""Lambda target: Invoke, RequestResponse by default so the worker sees the real outcome."""

from __future__ import annotations

from collections.abc import Sequence

from worker.aws.clients import Client
from worker.core.errors import DeliveryError, ErrorKind
from worker.core.limits import LAMBDA_MAX_ASYNC_BYTES, LAMBDA_MAX_SYNC_BYTES
from worker.settings import LambdaTarget
from worker.targets.base import Delivery, HandOff, Result, deliver_each, short_name, too_large


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
        response = await self._client.invoke(
            FunctionName=self._function, InvocationType=self._type, Payload=payload
        )
        answer = response.get("Payload")
        if answer is not None:  # read it to hand the connection back to the pool
            await answer.read()
        if response.get("FunctionError"):
            # 200 with X-Amz-Function-Error: the function ran and failed.
            raise DeliveryError(ErrorKind.RETRYABLE, f"FunctionError.{response['FunctionError']}")
        expected = 202 if self._type == "Event" else 200
        if response.get("StatusCode") != expected:
            raise DeliveryError(
                ErrorKind.RETRYABLE, f"UnexpectedStatus.{response.get('StatusCode')}"
            )
