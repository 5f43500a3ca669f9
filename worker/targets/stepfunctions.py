"""Step Functions target: StartExecution under a name derived from the idempotency key (by
default the DLQ message id; the state machine reads it as `$$.Execution.Name`).

The name makes a replay after a crash harmless: the same name with the same input returns the
running execution, and `ExecutionAlreadyExists` means it was already started (delivered).
With `wait_for_completion`, a failed execution is retried under the next name (`-1`, `-2`, …);
a replay first finds the running or succeeded execution of an earlier try.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import anyio

from worker.aws.clients import Client
from worker.aws.errors import error_code
from worker.core.errors import DeliveryError, ErrorKind
from worker.core.jsontext import loads
from worker.core.limits import SFN_MAX_INPUT_BYTES, utf8_len
from worker.settings import StepFunctionsTarget
from worker.targets.base import (
    Delivery,
    HandOff,
    Result,
    deliver_each,
    key_hash,
    short_name,
    too_large,
    trace_of,
)

MAX_NAME = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_TRIES = 1000


def execution_name(key: str, retry: int = 0) -> str:
    """Deterministic, at most 80 characters of [A-Za-z0-9_-]: `rw-` and the idempotency key
    (by default the DLQ message id), or its SHA-256 when the key has other characters or is too
    long (two keys must never share a name); `-N` for the N-th name of a waited-for message
    whose earlier executions failed."""
    suffix = f"-{retry}" if retry else ""
    room = MAX_NAME - len("rw-") - len("-999")
    body = key if len(key) <= room and not _UNSAFE.search(key) else key_hash(key)[:room]
    return f"rw-{body}{suffix}"


class StepFunctionsStarter(HandOff):
    service = "states"
    operation = "StartExecution"
    one_per_call = True

    def __init__(self, client: Client, settings: StepFunctionsTarget, *, poll: float = 2.0) -> None:
        self._client = client
        self._arn = settings.state_machine_arn
        self._wait = settings.wait_for_completion
        self._poll = poll
        self.name = short_name(settings.state_machine_arn)
        self.hands_off = not settings.wait_for_completion

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        return await deliver_each(batch, self._start)

    def _execution_arn(self, name: str) -> str:
        return self._arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"

    async def _start(self, delivery: Delivery) -> None:
        body = delivery.body
        if (size := utf8_len(body)) > SFN_MAX_INPUT_BYTES:
            raise too_large(size, SFN_MAX_INPUT_BYTES, "Step Functions input")
        try:
            loads(body)
        except ValueError as exc:
            raise DeliveryError(
                ErrorKind.PERMANENT, "InvalidExecutionInput", "not JSON", park_reason="unparseable"
            ) from exc
        for retry in range(MAX_TRIES):
            name = execution_name(delivery.idempotency_key, retry)
            try:
                # the DLQ message's X-Ray trace: the execution joins the trace that failed
                trace = {"traceHeader": t} if (t := trace_of(delivery, 256)) else {}
                started = await self._client.start_execution(
                    stateMachineArn=self._arn, name=name, input=body, **trace
                )
            except Exception as exc:
                if error_code(exc) != "ExecutionAlreadyExists":
                    raise
                if not self._wait:
                    return  # started by an earlier try: already delivered
                status = await self._status(self._execution_arn(name))
                if status == "SUCCEEDED":
                    return
                if status == "RUNNING":
                    await self._until_done(self._execution_arn(name))
                    return
                continue  # that try failed: this attempt gets the next name
            if self._wait:
                await self._until_done(started["executionArn"])
            return
        raise DeliveryError(ErrorKind.PERMANENT, "TooManyExecutions")  # pragma: no cover

    async def _status(self, arn: str) -> str:
        return str((await self._client.describe_execution(executionArn=arn))["status"])

    async def _until_done(self, arn: str) -> None:
        delay = self._poll
        while (described := await self._client.describe_execution(executionArn=arn))[
            "status"
        ] == "RUNNING":
            await anyio.sleep(delay)
            delay = min(delay * 2, 30.0)
        status = str(described["status"])
        if status != "SUCCEEDED":
            # DescribeExecution names the failure: the state's `error` and its `cause`.
            raise DeliveryError(
                ErrorKind.RETRYABLE,
                f"Execution{status.title().replace('_', '')}",
                str(described.get("cause") or ""),
                error_type=described.get("error") or None,
            )
