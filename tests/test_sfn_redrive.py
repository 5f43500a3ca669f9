"""Step Functions: a failed execution is redriven from the state that failed (SPEC.md, "Step
Functions: redrive from the failed state"), on the emulator's real interpreter and its
RedriveExecution (worker/emulator/redrive.py).

The machine: `One` sends its input to the queue `ran-one` (so the test counts how often it
ran), `Two` sends it to the queue `second`, which does not exist until the test creates it
(so `Two` fails once), `Three` passes."""

from __future__ import annotations

import json
from typing import Any

import pytest
import structlog

from tests.conftest import Worker, make_settings
from tests.helpers import depth, drain, run_until, wait_for
from tests.test_explain import _cli
from worker.emulator import ROLE_ARN, clock, create_queue
from worker.emulator.proxy import Rule

pytestmark = pytest.mark.anyio

# The history of the machine below, redriven once after `Two` failed: `One` ran once.
REDRIVEN_FROM_TWO = [
    "ExecutionStarted",
    "One",
    "Two",
    "ExecutionFailed",
    "ExecutionRedriven",
    "Two",
    "Three",
    "ExecutionSucceeded",
]
TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


def _definition(ran: str, second: str) -> str:
    def send(url: str, then: str) -> dict[str, Any]:
        return {
            "Type": "Task",
            "Resource": "arn:aws:states:::sqs:sendMessage",
            "Parameters": {"QueueUrl": url, "MessageBody.$": "$"},
            "ResultPath": None,
            "Next": then,
        }

    states = {"One": send(ran, "Two"), "Two": send(second, "Three"), "Three": {"Type": "Pass"}}
    states["Three"]["End"] = True
    return json.dumps({"StartAt": "One", "States": states})


async def _machine(aws: Any, kind: str = "STANDARD") -> tuple[str, str, str]:
    """(machine ARN, the `ran-one` queue, the URL `second` will have)."""
    ran = await create_queue(aws.sqs, "ran-one")
    second = ran.replace("ran-one", "second")
    machine = await aws.sfn.create_state_machine(
        name="three", definition=_definition(ran, second), roleArn=ROLE_ARN, type=kind
    )
    return machine["stateMachineArn"], ran, second


async def _worker(
    proxy: Any, worker_stack: Any, arn: str, queue: dict[str, Any] | None = None, **target: Any
) -> Worker:
    queues = {
        "orders": {
            **(queue or {}),
            "name": "orders-dlq",
            "target": {
                "kind": "stepfunctions",
                "state_machine_arn": arn,
                "wait_for_completion": True,
                **target,
            },
        }
    }
    return Worker(make_settings(proxy.url, queues), worker_stack)


async def _states_as_run(aws: Any, execution: str) -> list[str]:
    events = (await aws.sfn.get_execution_history(executionArn=execution))["events"]
    return [
        e["stateEnteredEventDetails"]["name"] if "stateEnteredEventDetails" in e else e["type"]
        for e in events
        if "stateEnteredEventDetails" in e or e["type"].startswith("Execution")
    ]


@pytest.mark.parametrize(("mode", "first_ran"), [("redrive", 1), ("restart", 2)])
async def test_the_next_attempt_resumes_at_the_state_that_failed(
    aws, proxy, worker_stack, mode, first_ran
):
    arn, ran, second = await _machine(aws)
    dlq = await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "parked")
    worker = await _worker(proxy, worker_stack, arn, on_failed_execution=mode)
    poller = await worker.poller("orders")
    trace = {"AWSTraceHeader": {"DataType": "String", "StringValue": TRACE}}
    await aws.sqs.send_message(
        QueueUrl=dlq, MessageBody='{"order": 1}', MessageSystemAttributes=trace
    )

    await run_until(poller, lambda: worker.settled("orders", "deferred") == 1)
    await create_queue(aws.sqs, "second")  # what failed `Two` is mended
    await run_until(poller, lambda: worker.settled("orders", "deleted") == 1)

    assert await depth(aws.sqs, ran) == first_ran  # `One` ran once in all when redriven
    assert await depth(aws.sqs, second) == 1
    assert await depth(aws.sqs, dlq) == 0
    executions = (await aws.sfn.list_executions(stateMachineArn=arn))["executions"]
    if mode == "redrive":
        [execution] = executions
        described = await aws.sfn.describe_execution(executionArn=execution["executionArn"])
        assert (described["status"], described["redriveCount"]) == ("SUCCEEDED", 1)
        assert await _states_as_run(aws, execution["executionArn"]) == REDRIVEN_FROM_TWO
        [call] = proxy.requests("states", "RedriveExecution")
        assert call["executionArn"] == execution["executionArn"]
        assert len(call["clientToken"]) <= 64
        # RedriveExecution has no traceHeader field: the trace goes as the HTTP header
        [headers] = proxy.headers("states", "RedriveExecution")
        assert headers["x-amzn-trace-id"] == TRACE
    else:
        assert sorted(e["status"] for e in executions) == ["FAILED", "SUCCEEDED"]
        assert proxy.count("states", "RedriveExecution") == 0


async def test_a_redrive_that_fails_again_is_an_attempt_and_parks_at_the_limit(
    aws, proxy, worker_stack
):
    """A redrive is an attempt: `Two` keeps failing, the message is parked after
    max_attempts with the execution's error, and `One` still ran once."""
    arn, ran, _ = await _machine(aws)
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parked = await create_queue(aws.sqs, "parked")
    queues = {
        "orders": {
            "name": "orders-dlq",
            "policy": {"max_attempts": 3},
            "target": {"kind": "stepfunctions", "state_machine_arn": arn},
        }
    }
    queues["orders"]["target"]["wait_for_completion"] = True
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    poller = await worker.poller("orders")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 2}')

    await run_until(poller, lambda: worker.settled("orders", "parked") == 1, timeout=60)

    assert worker.settled("orders", "deferred") == 2
    assert proxy.count("states", "RedriveExecution") == 2
    assert await depth(aws.sqs, ran) == 1
    assert await depth(aws.sqs, parked) == 1
    tokens = {r["clientToken"] for r in proxy.requests("states", "RedriveExecution")}
    assert len(tokens) == 2  # one per attempt


async def test_a_running_or_succeeded_execution_is_never_redriven(aws, proxy):
    """RedriveExecution refuses what is RUNNING or SUCCEEDED, and a token seen within 15
    minutes redrives nothing more: nothing runs twice."""
    arn, ran, second = await _machine(aws)
    started = await aws.sfn.start_execution(stateMachineArn=arn, name="e1", input="{}")
    execution = started["executionArn"]
    await wait_for(lambda: _status(aws, execution, "FAILED"))
    await create_queue(aws.sqs, "second")

    first = await aws.sfn.redrive_execution(executionArn=execution, clientToken="t-1")
    again = await aws.sfn.redrive_execution(executionArn=execution, clientToken="t-1")
    assert again["redriveDate"] == first["redriveDate"]
    await wait_for(lambda: _status(aws, execution, "SUCCEEDED"))
    with pytest.raises(aws.sfn.exceptions.ExecutionNotRedrivable):
        await aws.sfn.redrive_execution(executionArn=execution, clientToken="t-2")

    described = await aws.sfn.describe_execution(executionArn=execution)
    assert described["redriveCount"] == 1
    assert described["redriveStatus"] == "NOT_REDRIVABLE"
    assert described["redriveStatusReason"] == "Execution is SUCCEEDED and cannot be redriven."
    assert await depth(aws.sqs, ran) == 1
    assert await depth(aws.sqs, second) == 1

    running = json.dumps(
        {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 60, "End": True}}}
    )
    slow = await aws.sfn.create_state_machine(name="slow", definition=running, roleArn=ROLE_ARN)
    busy = await aws.sfn.start_execution(stateMachineArn=slow["stateMachineArn"], input="{}")
    with pytest.raises(aws.sfn.exceptions.ExecutionNotRedrivable):
        await aws.sfn.redrive_execution(executionArn=busy["executionArn"])
    await aws.sfn.stop_execution(executionArn=busy["executionArn"])


async def _status(aws: Any, execution: str, wanted: str) -> bool:
    return (await aws.sfn.describe_execution(executionArn=execution))["status"] == wanted


async def _failed(aws: Any, arn: str, name: str) -> str:
    """An execution of the machine, named `name`, once it failed (at `Two`)."""
    started = await aws.sfn.start_execution(stateMachineArn=arn, name=name, input="{}")
    await wait_for(lambda: _status(aws, started["executionArn"], "FAILED"))
    return str(started["executionArn"])


async def test_an_express_execution_is_started_anew_with_the_reason_logged(
    aws, proxy, worker_stack
):
    """Express executions cannot be redriven (and their names are not idempotent): the
    failure is logged with AWS's reason when it happens; the next attempt starts anew."""
    arn, ran, _ = await _machine(aws, kind="EXPRESS")
    dlq = await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "parked")
    worker = await _worker(proxy, worker_stack, arn)
    poller = await worker.poller("orders")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 3}')

    with structlog.testing.capture_logs() as logs:
        await run_until(poller, lambda: worker.settled("orders", "deferred") == 1)
    await create_queue(aws.sqs, "second")
    await run_until(poller, lambda: worker.settled("orders", "deleted") == 1)

    [said] = [e for e in logs if e["event"] == "execution_not_redrivable"]
    assert said["reason"] == "Execution is EXPRESS and cannot be redriven."
    assert (said["queue"], said["log_level"]) == ("orders", "warning")
    assert ":rw-" in said["execution"]
    assert await depth(aws.sqs, ran) == 2  # started anew: `One` ran again


async def test_one_stopped_over_14_days_ago_is_started_anew_with_aws_reason(
    aws, proxy, worker_stack
):
    """RedriveExecution refuses an execution stopped more than 14 days ago: the attempt
    starts the next name, logged with DescribeExecution's `redriveStatusReason`."""
    arn, ran, second = await _machine(aws)
    dlq = await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "parked")
    old = await aws.sfn.start_execution(
        stateMachineArn=arn, name="rw-o-5", input='{"order": "o-5"}'
    )
    await wait_for(lambda: _status(aws, old["executionArn"], "FAILED"))
    clock.advance(15 * 24 * 3600)
    await create_queue(aws.sqs, "second")
    # the key names the execution: an old failed one of the same order is found
    worker = await _worker(proxy, worker_stack, arn, {"idempotency_key": "body.order"})
    poller = await worker.poller("orders")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": "o-5"}')

    with structlog.testing.capture_logs() as logs:
        await run_until(poller, lambda: worker.settled("orders", "deleted") == 1)

    [said] = [e for e in logs if e["event"] == "redrive_refused_started_anew"]
    assert said["reason"] == "Execution redrivable period exceeded."
    assert said["execution"] == old["executionArn"]
    assert said["started"] == old["executionArn"] + "-1"
    assert proxy.count("states", "RedriveExecution") == 1
    assert await depth(aws.sqs, ran) == 2
    assert await depth(aws.sqs, second) == 1


async def test_a_lost_redrive_answer_redrives_once(aws, proxy, worker_stack):
    """The redrive happened, its answer was lost: the next try finds the execution running
    or succeeded and waits for it instead of redriving again."""
    arn, ran, second = await _machine(aws)
    dlq = await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "parked")
    worker = await _worker(proxy, worker_stack, arn)
    poller = await worker.poller("orders")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 4}')
    await run_until(poller, lambda: worker.settled("orders", "deferred") == 1)
    await create_queue(aws.sqs, "second")
    proxy.add(
        Rule(
            "states",
            "RedriveExecution",
            "error",
            status=500,
            code="InternalFailure",
            after=True,
            times=2,
        )
    )

    await run_until(poller, lambda: worker.settled("orders", "deleted") == 1)

    [execution] = (await aws.sfn.list_executions(stateMachineArn=arn))["executions"]
    described = await aws.sfn.describe_execution(executionArn=execution["executionArn"])
    assert described["redriveCount"] == 1
    assert await depth(aws.sqs, second) == 1
    assert await depth(aws.sqs, ran) == 1


def _status_change(execution: str, machine: str, status: str = "FAILED") -> str:
    """EventBridge's "Step Functions Execution Status Change", as a rule sends it to SQS."""
    return json.dumps(
        {
            "version": "0",
            "id": "315c1398-40ff-a850-213b-158f73e60175",
            "detail-type": "Step Functions Execution Status Change",
            "source": "aws.states",
            "account": "123456789012",
            "time": "2026-12-07T06:00:00Z",
            "region": "us-east-1",
            "resources": [execution],
            "detail": {
                "executionArn": execution,
                "stateMachineArn": machine,
                "name": execution.rsplit(":", 1)[1],
                "status": status,
                "startDate": 1796623200000,
                "stopDate": 1796623201000,
                "input": "{}",
                "error": "SQS.SdkClientException",
                "cause": "The specified queue does not exist.",
            },
        }
    )


async def test_auto_redrives_the_execution_a_status_change_event_names(aws, proxy, worker_stack):
    """A rule routes FAILED executions to a DLQ served by `kind: auto`: each is redriven from
    the state that failed, once, and only inside `allow`."""
    arn, ran, second = await _machine(aws)
    failed = (await aws.sfn.start_execution(stateMachineArn=arn, name="e1", input="{}"))[
        "executionArn"
    ]
    other = await aws.sfn.create_state_machine(
        name="payroll", definition=_definition(ran, second), roleArn=ROLE_ARN
    )
    outside = (await aws.sfn.start_execution(stateMachineArn=other["stateMachineArn"], input="{}"))[
        "executionArn"
    ]
    await wait_for(lambda: _status(aws, failed, "FAILED"))
    await wait_for(lambda: _status(aws, outside, "FAILED"))
    await create_queue(aws.sqs, "second")  # the trouble is mended
    dlq = await create_queue(aws.sqs, "states-dlq")
    parked = await create_queue(aws.sqs, "parked")
    for body in (
        _status_change(failed, arn),
        _status_change(failed, arn),  # EventBridge delivers at least once
        _status_change(outside, other["stateMachineArn"]),
        _status_change(failed, arn, status="SUCCEEDED"),
    ):
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody=body)
    allow = [arn]
    queues = {"states": {"name": "states-dlq", "target": {"kind": "auto", "allow": allow}}}
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    poller = await worker.poller("states")

    await run_until(
        poller,
        lambda: worker.settled("states", "deleted") + worker.settled("states", "parked") == 4,
    )
    await wait_for(lambda: _status(aws, failed, "SUCCEEDED"))

    assert worker.settled("states", "deleted") == 2
    described = await aws.sfn.describe_execution(executionArn=failed)
    assert described["redriveCount"] == 1  # the duplicate event redrove nothing more
    assert await _states_as_run(aws, failed) == REDRIVEN_FROM_TWO
    assert (await aws.sfn.describe_execution(executionArn=outside))["status"] == "FAILED"
    assert {r["executionArn"] for r in proxy.requests("states", "RedriveExecution")} == {failed}
    reasons = sorted(
        m["MessageAttributes"]["retry-worker.reason"]["StringValue"]
        for m in await drain(aws.sqs, parked)
    )
    assert reasons == ["not_replayable", "target_not_allowed"]


async def test_auto_parks_an_execution_it_cannot_redrive_with_aws_reason(aws, proxy, worker_stack):
    """An execution that stopped over 14 days ago: parked `not_redrivable` with AWS's reason,
    without a RedriveExecution call (DescribeExecution says so first)."""
    arn, _, _ = await _machine(aws)
    failed = await _failed(aws, arn, "e2")
    clock.advance(15 * 24 * 3600)
    dlq = await create_queue(aws.sqs, "states-dlq")
    parked = await create_queue(aws.sqs, "parked")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=_status_change(failed, arn))
    queues = {"states": {"name": "states-dlq", "target": {"kind": "auto", "allow": [arn]}}}
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    poller = await worker.poller("states")

    await run_until(poller, lambda: worker.settled("states", "parked") == 1)

    [message] = await drain(aws.sqs, parked)
    said = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert said["retry-worker.reason"] == "not_redrivable"
    assert said["retry-worker.error"] == "ExecutionNotRedrivable"
    assert said["retry-worker.error-message"] == "Execution redrivable period exceeded."
    assert proxy.count("states", "RedriveExecution") == 0


async def test_auto_stops_redriving_an_execution_that_keeps_failing(aws, proxy, worker_stack):
    """Each failed redrive sends a new event (a new id, a new time): the loop guard counts
    them by the execution, and parks `loop_detected` at max_attempts."""
    arn, _, _ = await _machine(aws)
    failed = await _failed(aws, arn, "e3")
    dlq = await create_queue(aws.sqs, "states-dlq")
    parked = await create_queue(aws.sqs, "parked")
    queues = {
        "states": {
            "name": "states-dlq",
            "target": {"kind": "auto", "allow": [arn]},
            "policy": {"max_attempts": 2},
        }
    }
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    poller = await worker.poller("states")

    for n in range(1, 4):  # the broken queue is never mended: each redrive fails again
        event = json.loads(_status_change(failed, arn))
        event["id"], event["time"] = f"event-{n}", f"2026-12-07T06:0{n}:00Z"
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(event))
        await run_until(
            poller,
            lambda n=n: (
                worker.settled("states", "deleted") + worker.settled("states", "parked") == n
            ),
        )
        await wait_for(lambda: _status(aws, failed, "FAILED"))

    assert worker.settled("states", "deleted") == 1
    assert (await aws.sfn.describe_execution(executionArn=failed))["redriveCount"] == 1
    reasons = [
        m["MessageAttributes"]["retry-worker.reason"]["StringValue"]
        for m in await drain(aws.sqs, parked)
    ]
    assert reasons == ["loop_detected", "loop_detected"]


async def test_auto_redrives_the_next_failure_of_the_same_execution(aws, proxy, worker_stack):
    """With the execution ARN as the key, the second failure's event has the key of the
    first: its redrive must still happen (the token names the failure, not the message)."""
    arn, _, second = await _machine(aws)
    failed = await _failed(aws, arn, "e4")
    dlq = await create_queue(aws.sqs, "states-dlq")
    await create_queue(aws.sqs, "parked")
    queues = {
        "states": {
            "name": "states-dlq",
            "target": {"kind": "auto", "allow": [arn]},
            "idempotency_key": "text",  # auto: the view is the payload, the execution
        }
    }
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    poller = await worker.poller("states")

    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=_status_change(failed, arn))
    await run_until(poller, lambda: worker.settled("states", "deleted") == 1)
    await wait_for(lambda: _status(aws, failed, "FAILED"))  # the redrive failed again
    await create_queue(aws.sqs, "second")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=_status_change(failed, arn))
    await run_until(poller, lambda: worker.settled("states", "deleted") == 2)

    await wait_for(lambda: _status(aws, failed, "SUCCEEDED"))
    assert (await aws.sfn.describe_execution(executionArn=failed))["redriveCount"] == 2
    assert await depth(aws.sqs, second) == 1


def test_a_status_change_event_is_read_from_its_execution_arn():
    """The machine checked against `allow` is the one in the execution ARN — the execution is
    what gets redriven — whatever the event's `stateMachineArn` says."""
    from worker.core.envelope import DlqMessage
    from worker.core.failure import parse_failure

    machine = "arn:aws:states:eu-west-1:123456789012:stateMachine:orders"
    execution = "arn:aws:states:eu-west-1:123456789012:execution:payroll:e9"
    event = parse_failure(DlqMessage("m", "r", _status_change(execution, machine)))
    assert event.shape == "sfn_execution"
    assert event.payload == execution
    assert event.target_arn == "arn:aws:states:eu-west-1:123456789012:stateMachine:payroll"
    assert event.replayable
    assert (event.error_code, event.error_message) == (
        "SQS.SdkClientException",
        "The specified queue does not exist.",
    )
    for status in ("RUNNING", "SUCCEEDED"):
        assert not parse_failure(
            DlqMessage("m", "r", _status_change(execution, machine, status))
        ).replayable
    express = "arn:aws:states:eu-west-1:123456789012:express:orders:e9:abc"
    assert parse_failure(DlqMessage("m", "r", _status_change(express, machine))).target_arn is None


async def test_a_replay_with_a_changed_body_is_started_anew_not_redriven(
    aws, proxy, worker_stack, tmp_path
):
    """A redrive runs the execution's own input: a parked message replayed with a fixed
    body must run the fix. The failed execution is left alone; the next name starts with it."""
    arn, _, second = await _machine(aws)
    dlq = await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "parked")
    worker = await _worker(proxy, worker_stack, arn, {"policy": {"max_attempts": 1}})
    poller = await worker.poller("orders")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 6}')
    await run_until(poller, lambda: worker.settled("orders", "parked") == 1)
    await create_queue(aws.sqs, "second")
    cli = _cli(tmp_path, worker.settings.model_dump(mode="json"))

    done = await cli(
        "parked",
        "replay",
        "orders",
        "--to",
        "target",
        "--yes",
        "--transform",
        "merge(body, {fixed: `true`})",
        "--backup",
        str(tmp_path / "b.jsonl"),
    )

    assert done.returncode == 0, done.stderr
    assert proxy.count("states", "RedriveExecution") == 0
    [message] = await drain(aws.sqs, second)
    assert json.loads(message["Body"]) == {"order": 6, "fixed": True}


async def test_a_later_execution_that_succeeded_means_delivered(aws, proxy, worker_stack):
    """`rw-<key>` failed and `rw-<key>-1` (started anew: restart, or a refused redrive)
    succeeded; the message comes back (a lost delete): delivered, nothing redriven."""
    arn, _, second = await _machine(aws)
    dlq = await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "parked")
    first = await aws.sfn.start_execution(
        stateMachineArn=arn, name="rw-o-7", input='{"order": "o-7"}'
    )
    await wait_for(lambda: _status(aws, first["executionArn"], "FAILED"))
    await create_queue(aws.sqs, "second")
    later = await aws.sfn.start_execution(
        stateMachineArn=arn, name="rw-o-7-1", input='{"order": "o-7"}'
    )
    await wait_for(lambda: _status(aws, later["executionArn"], "SUCCEEDED"))
    worker = await _worker(proxy, worker_stack, arn, {"idempotency_key": "body.order"})
    poller = await worker.poller("orders")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": "o-7"}')

    await run_until(poller, lambda: worker.settled("orders", "deleted") == 1)

    assert proxy.count("states", "RedriveExecution") == 0
    assert await depth(aws.sqs, second) == 1  # `Two` ran once, in rw-o-7-1
    assert len((await aws.sfn.list_executions(stateMachineArn=arn))["executions"]) == 2


async def test_a_stale_read_right_after_a_redrive_is_read_again(aws, proxy, worker_stack):
    """DescribeExecution is eventually consistent: just after RedriveExecution it may still
    show the failure that was redriven. That is not the redrive's outcome."""
    arn, _, second = await _machine(aws)
    dlq = await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "parked")
    worker = await _worker(proxy, worker_stack, arn, {"policy": {"max_attempts": 2}})
    poller = await worker.poller("orders")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 8}')
    await run_until(poller, lambda: worker.settled("orders", "deferred") == 1)
    await create_queue(aws.sqs, "second")
    [execution] = (await aws.sfn.list_executions(stateMachineArn=arn))["executions"]
    old = await aws.sfn.describe_execution(executionArn=execution["executionArn"])
    stale = {k: old[k] for k in ("executionArn", "stateMachineArn", "name", "status", "input")}
    stale |= {"cause": "old cause (stale read)", "redriveCount": 0, "startDate": 1796623200}
    # the read before the redrive (right: it failed) and the first one after (stale)
    only = execution["executionArn"] + '"'  # this name's requests, not `-1`'s
    proxy.add(Rule("states", "DescribeExecution", "answer", extra=stale, times=2, body=only))

    await run_until(poller, lambda: worker.settled("orders", "deleted") == 1)

    assert worker.settled("orders", "parked") == 0
    assert await depth(aws.sqs, second) == 1


async def test_a_redrive_the_role_may_not_make_parks_rather_than_start_anew(
    aws, proxy, worker_stack
):
    """Without states:RedriveExecution (an upgrade before its IAM): starting anew would run
    the steps that succeeded again. Parked `access_denied`, the cause said."""
    arn, ran, _ = await _machine(aws)
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parked = await create_queue(aws.sqs, "parked")
    worker = await _worker(proxy, worker_stack, arn)
    poller = await worker.poller("orders")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 9}')
    await run_until(poller, lambda: worker.settled("orders", "deferred") == 1)
    proxy.add(Rule("states", "RedriveExecution", "error", status=400, code="AccessDeniedException"))

    await run_until(poller, lambda: worker.settled("orders", "parked") == 1)

    [message] = await drain(aws.sqs, parked)
    assert message["MessageAttributes"]["retry-worker.reason"]["StringValue"] == "access_denied"
    assert len((await aws.sfn.list_executions(stateMachineArn=arn))["executions"]) == 1
    assert await depth(aws.sqs, ran) == 1


def test_on_failed_execution_without_waiting_is_refused():
    from pydantic import ValidationError

    from worker.settings.targets import StepFunctionsTarget

    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:m"
    with pytest.raises(ValidationError, match="restart` applies only with `wait_for_completion"):
        StepFunctionsTarget(
            kind="stepfunctions", state_machine_arn=machine, on_failed_execution="restart"
        )
    assert StepFunctionsTarget(kind="stepfunctions", state_machine_arn=machine)
    dumped = StepFunctionsTarget(kind="stepfunctions", state_machine_arn=machine).model_dump()
    assert StepFunctionsTarget(**dumped)  # a resolved configuration loads again


async def test_a_second_replay_after_a_fix_redrives_again(aws, proxy, worker_stack, tmp_path):
    """Replays start their attempts at 1: a token from the key and the attempt would repeat,
    and AWS would answer the second replay's redrive as the first's, redriving nothing."""
    arn, ran, second = await _machine(aws)
    dlq = await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "parked")
    worker = await _worker(proxy, worker_stack, arn, {"policy": {"max_attempts": 1}})
    poller = await worker.poller("orders")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 10}')
    await run_until(poller, lambda: worker.settled("orders", "parked") == 1)
    cli = _cli(tmp_path, worker.settings.model_dump(mode="json"))
    replay = ("parked", "replay", "orders", "--to", "target", "--yes")

    still_broken = await cli(*replay, "--backup", str(tmp_path / "1.jsonl"))
    assert still_broken.returncode == 1, still_broken.stdout  # redriven, failed again: parked
    await create_queue(aws.sqs, "second")
    fixed = await cli(*replay, "--backup", str(tmp_path / "2.jsonl"))

    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    [execution] = (await aws.sfn.list_executions(stateMachineArn=arn))["executions"]
    described = await aws.sfn.describe_execution(executionArn=execution["executionArn"])
    assert (described["status"], described["redriveCount"]) == ("SUCCEEDED", 2)
    assert await depth(aws.sqs, ran) == 1
    assert await depth(aws.sqs, second) == 1
