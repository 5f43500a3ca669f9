"""`kind: auto` and a "Step Functions Execution Status Change" event (EventBridge, routed to a DLQ
by a rule): the execution it names is redriven from the state that failed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.aws.clients import Client
from worker.aws.errors import error_code, error_message
from worker.aws.trace import traced
from worker.core.errors import DeliveryError, ErrorKind, said
from worker.core.failure import parse_failure
from worker.core.jsontext import loads
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
        event = parse_failure(delivery.message)  # as it came: the execution it names
        arn, failed_at = event.payload, _stopped_at(delivery.message.body)
        try:
            described = await self._client.describe_execution(executionArn=arn)
        except Exception as exc:
            if error_code(exc) == "ExecutionDoesNotExist":
                raise _not_redrivable(error_code(exc), error_message(exc)) from exc
            raise
        _not_behind(described, failed_at)
        if described["status"] in ("RUNNING", "SUCCEEDED"):
            return  # redriven since this failure (a duplicate event, a person): not twice
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


def _stopped_at(body: str) -> float | None:
    """The event's `detail.stopDate` (epoch seconds), when it says."""
    try:
        stopped = loads(body)["detail"]["stopDate"]
    except (ValueError, KeyError, TypeError):
        return None
    return stopped / 1000 if isinstance(stopped, int | float) else None


def _not_behind(described: dict[str, Any], failed_at: float | None) -> None:
    """DescribeExecution is eventually consistent: a read older than the failure the event
    reports (stopped before it; or running, or succeeded, with no redrive since) would
    redrive the wrong failure or none. Read again later (retried, with the back-off)."""
    if failed_at is None:
        return
    if described["status"] in ("RUNNING", "SUCCEEDED"):
        when = described.get("redriveDate")
        behind = when is None or when.timestamp() + 0.001 < failed_at
    else:
        stopped = described.get("stopDate")
        behind = stopped is not None and stopped.timestamp() + 0.001 < failed_at
    if behind:
        raise DeliveryError(
            ErrorKind.RETRYABLE,
            "ExecutionDescribedBehind",
            "DescribeExecution shows the execution as it was before the failure the event "
            "reports: read again later",
        )


def _not_redrivable(code: str, reason: str) -> DeliveryError:
    return DeliveryError(ErrorKind.PERMANENT, code, said(reason, 500), park_reason="not_redrivable")
