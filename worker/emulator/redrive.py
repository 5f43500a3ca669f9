"""Step Functions `RedriveExecution` for the emulator (moto 5.2 has none), on moto's own
state-machine interpreter (`execute_state_machine`: executions really run, their service
integrations call this emulator).

Faithful to the API reference where a test can tell:

- only a FAILED, TIMED_OUT or ABORTED execution of a STANDARD machine is redriven, within 14
  days of its stop (the emulator's clock) and at most 1,000 times; otherwise
  `ExecutionNotRedrivable`, and DescribeExecution says why (`redriveStatus`,
  `redriveStatusReason`, in AWS's words where the reference gives them);
- the execution resumes at the state that failed, with the input that state received, under
  the original definition and the same execution ARN; the states that succeeded are not run
  again; the history gains `ExecutionRedriven` and goes on;
- a `clientToken` seen for this execution within 15 minutes answers as the first call did and
  redrives nothing;
- DescribeExecution carries `redriveCount` and `redriveDate`.

Simplified: a failed Parallel or Map state is run again whole (AWS re-runs only its failed
branches or iterations), and variables assigned before the failure are not restored.

Applied by `speedups.apply()`, once per process; `serve_integrations(port)` points the
interpreter's service calls at this process's emulator.
"""

from __future__ import annotations

import datetime
import json
import threading
from dataclasses import dataclass, field
from typing import Any, cast

REDRIVABLE = ("FAILED", "TIMED_OUT", "ABORTED")
MAX_REDRIVES = 1000
REDRIVABLE_SECONDS = 14 * 24 * 3600
TOKEN_SECONDS = 15 * 60

_lock = threading.Lock()


@dataclass
class _Redrives:
    count: int = 0
    date: datetime.datetime | None = None
    tokens: dict[str, tuple[float, datetime.datetime]] = field(default_factory=dict)
    earlier: list[dict[str, Any]] = field(default_factory=list)  # the history before


def _of(execution: Any) -> _Redrives:
    found = execution.__dict__.get("_rw_redrives")
    if found is None:
        found = execution.__dict__.setdefault("_rw_redrives", _Redrives())
    return found  # type: ignore[no-any-return]


def apply() -> None:
    import logging

    from moto.stepfunctions.parser.backend.execution import Execution
    from moto.stepfunctions.responses import StepFunctionResponse

    # The interpreter logs a failed state's whole parse tree at ERROR: a failed execution is
    # an answer here, not the emulator's error.
    logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
    describe = StepFunctionResponse.describe_execution
    history = Execution.to_history_output

    def redrive_execution(self: Any) -> Any:
        from moto.core.responses import ActionResult

        arn = self._get_param("executionArn")
        token = self._get_param("clientToken")
        execution = self.stepfunction_backend.describe_execution(arn)
        return ActionResult({"redriveDate": redrive(execution, token)})

    def describe_execution(self: Any) -> Any:
        from moto.core.responses import ActionResult

        answer = describe(self)
        execution = self.stepfunction_backend.describe_execution(self._get_param("executionArn"))
        return ActionResult({**cast(dict[str, Any], answer.result), **described(execution)})

    def to_history_output(self: Any) -> Any:
        output: Any = history(self)
        earlier = _of(self).earlier
        if earlier:
            output["events"] = [*earlier, *_after(output["events"], len(earlier))]
        return output

    setattr(StepFunctionResponse, "redrive_execution", redrive_execution)  # noqa: B010
    setattr(StepFunctionResponse, "describe_execution", describe_execution)  # noqa: B010
    setattr(Execution, "to_history_output", to_history_output)  # noqa: B010


def serve_integrations(port: int) -> None:
    """A state's service integration (`arn:aws:states:::sqs:sendMessage`…) calls the emulator
    on `port` of this machine (moto reads the port at each call)."""
    from moto.stepfunctions.parser.asl.utils import boto_client

    setattr(boto_client, "moto_server_port", lambda: str(port))  # noqa: B010


def not_redrivable(execution: Any) -> str | None:
    """Why RedriveExecution would refuse this execution now, or None."""
    status = str(getattr(execution, "status", ""))
    if not hasattr(execution, "exec_worker"):
        return "Executions do not run in this emulator (execute_state_machine is off)."
    # moto keeps the machine's type in `type` (its `sm_type` always says STANDARD)
    if str(getattr(execution.state_machine, "type", "STANDARD")) != "STANDARD":
        return "Execution is EXPRESS and cannot be redriven."
    if status not in REDRIVABLE:
        return f"Execution is {status} and cannot be redriven."
    stopped = execution.stop_date
    if stopped is not None and _now() - stopped.timestamp() > REDRIVABLE_SECONDS:
        return "Execution redrivable period exceeded."
    if _of(execution).count >= MAX_REDRIVES:
        return f"Execution has been redriven the maximum of {MAX_REDRIVES} times."
    return None


def described(execution: Any) -> dict[str, Any]:
    redrives = _of(execution)
    reason = not_redrivable(execution)
    fields: dict[str, Any] = {
        "redriveCount": redrives.count,
        "redriveStatus": "NOT_REDRIVABLE" if reason else "REDRIVABLE",
    }
    if reason:
        fields["redriveStatusReason"] = reason
    if redrives.date is not None:
        fields["redriveDate"] = redrives.date
    return fields


def redrive(execution: Any, token: str | None) -> datetime.datetime:
    from moto.core.exceptions import AWSError

    class ExecutionNotRedrivable(AWSError):
        TYPE = "ExecutionNotRedrivable"
        STATUS = 400

    with _lock:
        redrives = _of(execution)
        now = _now()
        if token and (seen := redrives.tokens.get(token)) and now - seen[0] < TOKEN_SECONDS:
            return seen[1]  # the same request again: answered as before, nothing redriven
        if (reason := not_redrivable(execution)) is not None:
            arn = execution.exec_arn
            raise ExecutionNotRedrivable(f"Execution {arn} cannot be redriven: {reason}")
        redrives.earlier = _history(execution)
        redrives.count += 1
        redrives.date = datetime.datetime.fromtimestamp(now, tz=datetime.UTC)
        if token:
            redrives.tokens[token] = (now, redrives.date)
        _resume(execution, redrives.count)
        return redrives.date


def _now() -> float:
    from worker.emulator import clock

    return clock.now()


def _history(execution: Any) -> list[dict[str, Any]]:
    return list(execution.to_history_output()["events"])


def _after(events: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
    """A redrive's own events, numbered on from the history before it."""
    moved = []
    for event in events:
        event = dict(event)
        event["id"] = event["id"] + offset
        if event.get("previousEventId"):
            event["previousEventId"] = event["previousEventId"] + offset
        moved.append(event)
    return moved


def failed_state(definition: dict[str, Any], events: list[dict[str, Any]]) -> tuple[str, Any]:
    """The top-level state the execution stopped in (entered, never exited) and the input it
    received; the start state and no input when it stopped before any."""
    top = definition.get("States", {})
    open_states: dict[str, Any] = {}
    for event in events:
        if (entered := event.get("stateEnteredEventDetails")) and entered["name"] in top:
            open_states.pop(entered["name"], None)
            open_states[entered["name"]] = entered.get("input")
        elif (exited := event.get("stateExitedEventDetails")) and exited["name"] in top:
            open_states.pop(exited["name"], None)
    if not open_states:
        return str(definition["StartAt"]), None
    name, text = list(open_states.items())[-1]
    return name, json.loads(text) if isinstance(text, str) else text


def _resume(execution: Any, count: int) -> None:
    from moto.stepfunctions.parser.api import ExecutionStatus, HistoryEventType
    from moto.stepfunctions.parser.asl.eval.evaluation_details import (
        EvaluationDetails,
        StateMachineDetails,
    )
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    definition = json.loads(execution.state_machine.definition)
    state, state_input = failed_state(definition, _of(execution).earlier)
    original = execution.get_start_state_machine_details()
    resumed = StateMachineDetails(
        arn=original.arn,
        name=original.name,
        typ=original.typ,
        definition=json.dumps({**definition, "StartAt": state}),
    )

    class Resumed(ExecutionWorker):
        """Runs from the failed state with the input it had; the history says redriven."""

        def _get_evaluation_environment(self) -> Any:
            env = super()._get_evaluation_environment()
            if state_input is not None:
                env.states.reset(state_input)
            return env

        def _execution_logic(self) -> None:
            program = self._get_evaluation_entrypoint()
            self.env = self._get_evaluation_environment()
            self.env.event_manager.add_event(
                context=self.env.event_history_context,
                event_type=HistoryEventType.ExecutionRedriven,
                event_details=cast(Any, {"executionRedrivenEventDetails": {"redriveCount": count}}),
                update_source_event_id=False,
            )
            program.eval(self.env)
            self._execution_communication.terminated()

    worker = Resumed(
        evaluation_details=EvaluationDetails(
            aws_execution_details=execution._get_start_aws_execution_details(),
            execution_details=execution.get_start_execution_details(),
            state_machine_details=resumed,
        ),
        exec_comm=execution._get_start_execution_worker_comm(),
        cloud_watch_logging_session=execution._cloud_watch_logging_session,
        activity_store=execution._activity_store,
    )
    execution.exec_worker = worker
    execution.exec_status = ExecutionStatus.RUNNING
    execution.stop_date = None
    execution.error = execution.cause = execution.output = None
    worker.start()  # type: ignore[no-untyped-call]
