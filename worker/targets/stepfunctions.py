"""Step Functions target: StartExecution under a name derived from the idempotency key (by
default the DLQ message id; the state machine reads it as `$$.Execution.Name`).

The name makes a replay after a crash harmless: the same name with the same input returns the
running execution, and `ExecutionAlreadyExists` means it was already started (delivered).
With `wait_for_completion`, the next attempt after a FAILED, TIMED_OUT or ABORTED execution
redrives it (`on_failed_execution: redrive`, the default): RedriveExecution resumes it at the
state that failed, so the states that succeeded do not run again; a `clientToken` from the key
and the attempt makes a re-sent call harmless. One that cannot be redriven (Express, stopped
over 14 days ago, 1,000 redrives) — or every failed one with `restart` — is started anew under
the next name (`-1`, `-2`, …), logged with AWS's `redriveStatusReason`. A replay first finds
the running or succeeded execution of an earlier try.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import anyio
import structlog

from worker.aws.clients import Client
from worker.aws.errors import error_code, error_message
from worker.aws.trace import traced
from worker.core.errors import DeliveryError, ErrorKind, said
from worker.core.jsontext import loads
from worker.core.limits import SFN_MAX_INPUT_BYTES, utf8_len
from worker.settings import StepFunctionsTarget
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

log = structlog.get_logger("worker.targets.stepfunctions")

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
        self._redrive = settings.on_failed_execution == "redrive"
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
        # the DLQ message's X-Ray trace: the execution joins the trace that failed
        trace = trace_of(delivery, 256)
        refused: tuple[str, str] | None = None  # a failed execution that could not be redriven
        for retry in range(MAX_TRIES):
            name = execution_name(delivery.idempotency_key, retry)
            try:
                started = await self._client.start_execution(
                    stateMachineArn=self._arn,
                    name=name,
                    input=body,
                    **({"traceHeader": trace} if trace else {}),
                )
            except Exception as exc:
                if error_code(exc) != "ExecutionAlreadyExists":
                    raise
                if not self._wait:
                    return  # started by an earlier try: already delivered
                done, why = await self._earlier(self._execution_arn(name), delivery, trace)
                if done:
                    return
                refused = why or refused
                continue  # that try failed: this attempt gets the next name
            if self._wait:
                if refused is not None:
                    log.warning(
                        "redrive_refused_started_anew",
                        queue=delivery.queue,
                        execution=refused[0],
                        reason=refused[1],
                        started=started["executionArn"],
                    )
                await self._until_done(started["executionArn"], delivery.queue)
            return
        raise DeliveryError(ErrorKind.PERMANENT, "TooManyExecutions")  # pragma: no cover

    async def _earlier(
        self, arn: str, delivery: Delivery, trace: str | None
    ) -> tuple[bool, tuple[str, str] | None]:
        """An earlier try of this message started `arn`: (True) once it is done with —
        succeeded, waited for, or redriven and waited for — else (False) whether a redrive
        was refused, and why."""
        described = await self._client.describe_execution(executionArn=arn)
        status = described["status"]
        if status == "SUCCEEDED":
            return True, None
        if status == "RUNNING":
            await self._until_done(arn, delivery.queue)
            return True, None
        if not self._redrive:
            return False, None
        if not _same_json(described.get("input"), delivery.body):
            # A redrive runs the execution's own input: an edited or newly transformed
            # payload would never run. Started anew with what this attempt delivers.
            return False, (arn, "the input differs from this attempt's (edited or transformed)")
        why = await self._redriven(arn, delivery, trace)
        return why is None, None if why is None else (arn, why)

    async def _redriven(self, arn: str, delivery: Delivery, trace: str | None) -> str | None:
        """Resume a failed execution at the state that failed and wait for it (raising as
        `_until_done` does); None once it ran, or why Step Functions would not redrive it
        (AWS's `redriveStatusReason`): then the caller starts it anew."""
        token = redrive_token(delivery.idempotency_key, delivery.attempt)
        try:
            with traced(trace):  # RedriveExecution has no traceHeader: the HTTP header
                await self._client.redrive_execution(executionArn=arn, clientToken=token)
        except Exception as exc:
            code = error_code(exc)
            if code not in ("ExecutionNotRedrivable", "AccessDeniedException"):
                raise
            described = await self._client.describe_execution(executionArn=arn)
            if described["status"] in ("RUNNING", "SUCCEEDED"):
                # redriven meanwhile (an earlier try of this message whose answer was lost):
                # it runs once, and this attempt waits for it
                await self._until_done(arn, delivery.queue)
                return None
            if code == "AccessDeniedException":
                return "not permitted: the role lacks states:RedriveExecution"
            return said(str(described.get("redriveStatusReason") or error_message(exc)), 500)
        log.info(
            "execution_redriven", queue=delivery.queue, execution=arn, attempt=delivery.attempt
        )
        await self._until_done(arn, delivery.queue)
        return None

    async def _until_done(self, arn: str, queue: str = "") -> None:
        delay = self._poll
        while (described := await self._client.describe_execution(executionArn=arn))[
            "status"
        ] == "RUNNING":
            await anyio.sleep(delay)
            delay = min(delay * 2, 30.0)
        status = str(described["status"])
        if status != "SUCCEEDED":
            if self._redrive and described.get("redriveStatus") == "NOT_REDRIVABLE":
                # said once per failure: the next attempt starts it anew (Express, …)
                log.warning(
                    "execution_not_redrivable",
                    queue=queue,
                    execution=arn,
                    reason=said(str(described.get("redriveStatusReason") or ""), 500),
                )
            # DescribeExecution names the failure: the state's `error` and its `cause`.
            raise DeliveryError(
                ErrorKind.RETRYABLE,
                f"Execution{status.title().replace('_', '')}",
                str(described.get("cause") or ""),
                error_type=described.get("error") or None,
            )


def _same_json(text: object, body: str) -> bool:
    """Whether an execution's input (as DescribeExecution gives it back: AWS may re-serialise
    it) is the JSON value `body` is."""
    try:
        return isinstance(text, str) and loads(text) == loads(body)
    except ValueError:
        return False


def redrive_token(key: str, attempt: int | None = None) -> str:
    """A RedriveExecution `clientToken` (at most 64 characters): a re-sent call with it
    within 15 minutes redrives nothing more."""
    return key_hash(key if attempt is None else f"{key}\n{attempt}")[:64]


class StepFunctionsRedriver(HandOff):
    """`kind: auto` on an EventBridge "Step Functions Execution Status Change" event: resume
    the execution it names at the state that failed. One redrive per DLQ message (its token
    is the key alone); one that is RUNNING or SUCCEEDED already ran again — by an earlier try
    or by a person — and is not touched; one that cannot be redriven is parked with AWS's
    reason (`not_redrivable`). Hands off: a redrive that fails again sends a new event."""

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
            with traced(trace_of(delivery, HEADER_TRACE_LIMIT)):
                await self._client.redrive_execution(
                    executionArn=arn, clientToken=redrive_token(delivery.idempotency_key)
                )
        except Exception as exc:
            code = error_code(exc)
            if code == "ExecutionDoesNotExist":
                raise DeliveryError(
                    ErrorKind.PERMANENT, code, error_message(exc), park_reason="not_redrivable"
                ) from exc
            if code != "ExecutionNotRedrivable":
                raise
            described = await self._client.describe_execution(executionArn=arn)
            if described["status"] in ("RUNNING", "SUCCEEDED"):
                return  # redriven already: nothing runs twice
            reason = str(described.get("redriveStatusReason") or error_message(exc))
            raise DeliveryError(
                ErrorKind.PERMANENT, code, said(reason, 500), park_reason="not_redrivable"
            ) from exc
