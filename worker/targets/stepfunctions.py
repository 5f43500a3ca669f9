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
from typing import Any

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
# DescribeExecution first after 0.25 s, then at twice the wait each time up to 30 s: a quick
# workflow is seen done at once, a long one costs a few more reads than a 2 s start (free
# calls; well inside the API's rate).
FIRST_POLL_SECONDS = 0.25
STALE_READS = 3  # reads right after a redrive that may still show the failure it redrove


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

    def __init__(
        self, client: Client, settings: StepFunctionsTarget, *, poll: float = FIRST_POLL_SECONDS
    ) -> None:
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
        if self._wait and delivery.attempt > 1:  # an earlier attempt started one, surely
            await self._after_earlier(delivery, trace)
            return
        try:
            started = await self._begin(delivery, execution_name(delivery.idempotency_key), trace)
        except Exception as exc:
            if error_code(exc) != "ExecutionAlreadyExists":
                raise
            if self._wait:  # else: started by an earlier try, already delivered
                await self._after_earlier(delivery, trace)
            return
        if self._wait:
            await self._until_done(started, delivery.queue)

    async def _begin(self, delivery: Delivery, name: str, trace: str | None) -> str:
        started = await self._client.start_execution(
            stateMachineArn=self._arn,
            name=name,
            input=delivery.body,
            **({"traceHeader": trace} if trace else {}),
        )
        return str(started["executionArn"])

    async def _after_earlier(self, delivery: Delivery, trace: str | None) -> None:
        """Earlier tries of this message started `rw-<key>`, `-1`, …: one that succeeded
        means delivered, one that runs is waited for, whichever it is; else the latest failed
        one is redriven (same input, `redrive`), or the next name is started."""
        found = await self._earlier(delivery)
        if found is None:
            return
        retry, latest, other = found
        refused = None
        if latest is not None and self._redrive:
            arn, described = latest
            if (why := await self._redriven(arn, described, delivery, trace)) is None:
                return
            refused = (arn, why)
        elif other is not None and self._redrive:
            # A redrive runs the execution's own input: an edited or newly transformed
            # payload would never run. Started anew with what this attempt delivers.
            refused = (other, "the input differs from this attempt's (edited or transformed)")
        name = execution_name(delivery.idempotency_key, retry)
        try:
            started = await self._begin(delivery, name, trace)
        except Exception as exc:
            if error_code(exc) != "ExecutionAlreadyExists":
                raise
            await self._until_done(self._execution_arn(name), delivery.queue)  # another try's
            return
        if refused is not None:
            log.warning(
                "redrive_refused_started_anew",
                queue=delivery.queue,
                execution=refused[0],
                reason=refused[1],
                started=started,
            )
        await self._until_done(started, delivery.queue)

    async def _earlier(
        self, delivery: Delivery
    ) -> tuple[int, tuple[str, dict[str, Any]] | None, str | None] | None:
        """None once an earlier execution of this input succeeded or was waited for; else
        the first free name's number, the latest failed execution of this input (its ARN
        and description), and the last one of another input (an edit, a new transform:
        what it ran is not what this attempt delivers, whatever became of it)."""
        latest: tuple[str, dict[str, Any]] | None = None
        other = None
        for retry in range(MAX_TRIES):
            arn = self._execution_arn(execution_name(delivery.idempotency_key, retry))
            try:
                described = await self._client.describe_execution(executionArn=arn)
            except Exception as exc:
                if error_code(exc) != "ExecutionDoesNotExist":
                    raise
                return retry, latest, other
            if not _same_json(described.get("input"), delivery.body):
                other = arn
                continue
            if described["status"] == "SUCCEEDED":
                return None
            if described["status"] == "RUNNING":
                await self._until_done(arn, delivery.queue)
                return None
            latest = (arn, described)
        raise DeliveryError(ErrorKind.PERMANENT, "TooManyExecutions")  # pragma: no cover

    async def _redriven(
        self, arn: str, described: dict[str, Any], delivery: Delivery, trace: str | None
    ) -> str | None:
        """Resume a failed execution at the state that failed and wait for it (raising as
        `_until_done` does); None once it ran, or why Step Functions would not redrive it
        (AWS's `redriveStatusReason`): then the caller starts it anew. AccessDenied is not
        a reason to start anew (the steps that succeeded would run again): it is raised."""
        before = int(described.get("redriveCount") or 0)
        try:
            with traced(trace):  # RedriveExecution has no traceHeader: the HTTP header
                await self._client.redrive_execution(
                    executionArn=arn, clientToken=redrive_token(arn, before)
                )
        except Exception as exc:
            if error_code(exc) != "ExecutionNotRedrivable":
                raise
            again = await self._client.describe_execution(executionArn=arn)
            if again["status"] in ("RUNNING", "SUCCEEDED"):
                # redriven meanwhile (by another try of this message, or a person): it runs
                # once, and this attempt waits for it
                await self._until_done(arn, delivery.queue)
                return None
            return said(str(again.get("redriveStatusReason") or error_message(exc)), 500)
        queue = delivery.queue
        log.info("execution_redriven", queue=queue, execution=arn, attempt=delivery.attempt)
        await self._until_done(arn, delivery.queue, redrives_before=before)
        return None

    async def _until_done(
        self, arn: str, queue: str = "", redrives_before: int | None = None
    ) -> None:
        """Wait for the execution to stop; raise unless it SUCCEEDED. Right after a redrive
        (`redrives_before`), DescribeExecution may still show the failure it redrove (it is
        eventually consistent): that is read again, up to STALE_READS times."""
        delay, stale = self._poll, 0
        while True:
            described = await self._client.describe_execution(executionArn=arn)
            status = str(described["status"])
            behind = (
                redrives_before is not None
                and status != "RUNNING"
                and int(described.get("redriveCount") or 0) <= redrives_before
                and stale < STALE_READS
            )
            if status != "RUNNING" and not behind:
                break
            stale += behind
            await anyio.sleep(delay)
            delay = min(delay * 2, 30.0)
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


def redrive_token(execution_arn: str, redrive_count: int) -> str:
    """A RedriveExecution `clientToken` (at most 64 characters) that names the failure being
    redriven: the execution and how often it was redriven before. Every try, replica, replay
    or duplicate event that redrives the same failure sends the same token (AWS redrives it
    once, within its 15 minutes); the execution's next failure gets a new one. (A token from
    the message's key and attempt would repeat across replays, whose attempts start at 1,
    and AWS would answer a new failure's redrive as the old one's, redriving nothing.)"""
    return key_hash(f"{execution_arn}\n{redrive_count}")[:64]
