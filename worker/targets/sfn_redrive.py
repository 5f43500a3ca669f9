"""`kind: auto` and a "Step Functions Execution Status Change" event (EventBridge, routed to a DLQ
by a rule): the execution it names is redriven from the state that failed."""

from __future__ import annotations

from collections.abc import Sequence

from worker.aws.clients import Client
from worker.aws.errors import error_code, error_message
from worker.aws.trace import traced
from worker.core.errors import DeliveryError, ErrorKind, said
from worker.targets.base import (
    HEADER_TRACE_LIMIT,
    Delivery,
    HandOff,
    Result,
    deliver_each,
    short_name,
    trace_of,
)
from worker.targets.stepfunctions import redrive_token


class StepFunctionsRedriver(HandOff):
    """`kind: auto` on an EventBridge "Step Functions Execution Status Change" event: resume
    the execution it names at the state that failed. One that is RUNNING or SUCCEEDED already
    ran again — by another try, a duplicate event or a person — and is not touched; one that
    cannot be redriven is parked with AWS's reason (`not_redrivable`). The token names the
    failure (the execution and its redrive count): a duplicate of the event redrives nothing
    more, the next failure's event redrives again. Hands off: a redrive that fails again sends
    a new event (the loop guard counts them per execution)."""

    service = "states"
    operation = "RedriveExecution"
    one_per_call = True
    hands_off = True

    def __init__(self, client: Client, machine_arn: str) -> None:
        self._client = client
        self.name = short_name(machine_arn)

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        return await deliver_each(batch, self._redrive)

    async def _redrive(self, delivery: Delivery) -> None:
        arn = delivery.message.body  # the execution the event names
        try:
            described = await self._client.describe_execution(executionArn=arn)
        except Exception as exc:
            if error_code(exc) == "ExecutionDoesNotExist":
                raise _not_redrivable(error_code(exc), error_message(exc)) from exc
            raise
        if described["status"] in ("RUNNING", "SUCCEEDED"):
            return  # redriven already: nothing runs twice
        if described.get("redriveStatus") == "NOT_REDRIVABLE":  # AWS says why, up front
            reason = str(described.get("redriveStatusReason") or "not redrivable")
            raise _not_redrivable("ExecutionNotRedrivable", reason)
        token = redrive_token(arn, int(described.get("redriveCount") or 0))
        try:
            with traced(trace_of(delivery, HEADER_TRACE_LIMIT)):
                await self._client.redrive_execution(executionArn=arn, clientToken=token)
        except Exception as exc:
            if error_code(exc) != "ExecutionNotRedrivable":
                raise
            again = await self._client.describe_execution(executionArn=arn)
            if again["status"] in ("RUNNING", "SUCCEEDED"):
                return  # redriven meanwhile
            reason = str(again.get("redriveStatusReason") or error_message(exc))
            raise _not_redrivable(error_code(exc), reason) from exc


def _not_redrivable(code: str, reason: str) -> DeliveryError:
    return DeliveryError(ErrorKind.PERMANENT, code, said(reason, 500), park_reason="not_redrivable")
