"""The IAM policy proven by the calls (issue 29, item 12): the daemon serves every target kind,
parks, shares its budgets through the table and asks a Lambda hook; then an operator summarises,
replays, purges, pauses and resumes. Every request the fault proxy saw — its IAM action and the
resource it named — must be allowed by what `iam-policy` (daemon) and `iam-policy --operator`
generate for that configuration. An action missing from the generator fails here, not in
production with AccessDenied."""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from typing import Any
from urllib.parse import unquote

import anyio
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import make_settings
from tests.helpers import depth, wait_for
from tests.test_operator_loop import Cli
from worker.daemon.app import serve
from worker.emulator import (
    ACCOUNT,
    ROLE_ARN,
    create_coordination_table,
    create_function,
    create_queue,
    queue_arn,
)
from worker.emulator.proxy import FaultProxy, Rule
from worker.ops.iam import build_policy
from worker.ops.operator_iam import operator_policy
from worker.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(240)]

REGION = "us-east-1"
DEFINITION = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
# API operations whose IAM action has another name.
ACTIONS = {
    ("sqs", "SendMessageBatch"): "sqs:SendMessage",
    ("sqs", "DeleteMessageBatch"): "sqs:DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "sqs:ChangeMessageVisibility",
    ("lambda", "Invoke"): "lambda:InvokeFunction",
    ("sns", "PublishBatch"): "sns:Publish",
}
_FUNCTION = re.compile(r"/functions/([^/]+)/invocations")


def arn(service: str, rest: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{rest}"


def named(service: str, value: str, prefix: str) -> str:
    return value if value.startswith("arn:") else arn(service, prefix + value)


def _sqs(body: dict[str, Any]) -> list[str]:
    if "QueueUrl" in body:
        return [arn("sqs", body["QueueUrl"].rstrip("/").rsplit("/", 1)[1])]
    if "QueueName" in body:
        return [arn("sqs", body["QueueName"])]
    return ["*"]  # ListQueues


def _lambda(path: str) -> list[str]:
    match = _FUNCTION.search(path)
    assert match, path
    return [named("lambda", unquote(match.group(1)).split(":")[0], "function:")]


def _states(body: dict[str, Any]) -> list[str]:
    return [body[k] for k in ("stateMachineArn", "executionArn") if k in body][:1] or ["*"]


def _events(body: dict[str, Any]) -> list[str]:
    buses = {e.get("EventBusName", "default") for e in body.get("Entries", [])}
    return [named("events", b, "event-bus/") for b in sorted(buses)]


def _dynamodb(body: dict[str, Any]) -> list[str]:
    tables = [body["TableName"]] if "TableName" in body else list(body.get("RequestItems", {}))
    return [named("dynamodb", t, "table/") for t in tables]


def resources(service: str, body: Any, path: str) -> list[str]:
    """The resources a request names, as IAM sees them."""
    body = body if isinstance(body, dict) else {}
    by_service = {
        "sqs": lambda: _sqs(body),
        "lambda": lambda: _lambda(path),
        "states": lambda: _states(body),
        "events": lambda: _events(body),
        "sns": lambda: [body["TopicArn"]],
        "dynamodb": lambda: _dynamodb(body),
    }
    assert service in by_service, f"no resource rule for {service}"
    return by_service[service]()


def allowed(policy: dict[str, Any], action: str, resource: str) -> bool:
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        actions = statement["Action"]
        granted = statement["Resource"]
        actions = [actions] if isinstance(actions, str) else actions
        granted = [granted] if isinstance(granted, str) else granted
        if any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in actions) and any(
            fnmatch.fnmatchcase(resource, r) for r in granted
        ):
            return True
    return False


def made(proxy: FaultProxy) -> set[tuple[str, str]]:
    """(IAM action, resource) of every request the proxy saw since it was last cleared."""
    bodies: dict[tuple[str, str], list[Any]] = {}
    for service, operation, body in proxy.journal:
        bodies.setdefault((service, operation), []).append(body)
    calls = set()
    with proxy._lock:
        arrivals = list(proxy.arrivals)
    for _, service, operation, path, _who in arrivals:
        if service == "s3":  # REST: the method and whether the path names an object
            calls.add(_s3(operation.split()[0], path))
            continue
        action = ACTIONS.get((service, operation), f"{service}:{operation}")
        seen = bodies.get((service, operation)) or [None]
        for body in seen if service != "lambda" else [None]:
            for resource in resources(service, body, path):
                calls.add((action, resource))
    return calls


def _s3(method: str, path: str) -> tuple[str, str]:
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    if not key:
        assert method == "GET", (method, path)
        return "s3:ListBucket", f"arn:aws:s3:::{bucket}"
    action = "s3:PutObject" if method == "PUT" else "s3:GetObject"  # GET and HEAD read it
    return action, f"arn:aws:s3:::{bucket}/{key}"


def refused(policy: dict[str, Any], calls: set[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted(c for c in calls if not allowed(policy, *c))


async def _failed(aws: Any, execution: str) -> bool:
    return (await aws.sfn.describe_execution(executionArn=execution))["status"] == "FAILED"


def _status_change(execution: str) -> str:
    machine = execution.replace(":execution:", ":stateMachine:").rsplit(":", 1)[0]
    detail = {"executionArn": execution, "stateMachineArn": machine, "status": "FAILED"}
    return json.dumps(
        {
            "source": "aws.states",
            "detail-type": "Step Functions Execution Status Change",
            "detail": detail,
        }
    )


def config(endpoint: str, machine: str, topic: str, failing: str = "") -> Settings:
    queues = {
        "to-lambda": {
            "name": "to-lambda-dlq",
            "target": {"kind": "lambda", "function": "fn"},
            "hook": {"lambda": "decide"},
        },
        "to-sqs": {"name": "to-sqs-dlq", "target": {"kind": "sqs", "queue": "out"}},
        "to-sfn": {
            "name": "to-sfn-dlq",
            "target": {"kind": "stepfunctions", "state_machine_arn": machine},
        },
        "to-sns": {"name": "to-sns-dlq", "target": {"kind": "sns", "topic_arn": topic}},
        "to-events": {
            "name": "to-events-dlq",
            "target": {"kind": "eventbridge", "event_bus": "bus"},
        },
        # a rule's "Step Functions Execution Status Change" events: redriven
        "to-auto": {"name": "to-auto-dlq", "target": {"kind": "auto", "allow": [failing]}},
    }
    return make_settings(
        endpoint,
        queues,
        http={"host": "127.0.0.1", "port": 0},
        coordination={"backend": "dynamodb", "table": "rw-coordination"},
        keeper={"enabled": True, "margin_seconds": 30, "interval_seconds": 5},
        operator={"backup_dir": "s3://rw-backups/operators"},  # backups in S3
    )


async def test_every_call_made_is_allowed_by_the_generated_policies(aws, proxy, tmp_path):
    await create_function(aws.lambda_, "fn")
    await create_function(aws.lambda_, "decide")
    machine = await aws.sfn.create_state_machine(name="sm", definition=DEFINITION, roleArn=ROLE_ARN)
    sns = await aws.client("sns")
    topic = (await sns.create_topic(Name="events"))["TopicArn"]
    events = await aws.client("events")
    await events.create_event_bus(Name="bus")
    await create_coordination_table(await aws.client("dynamodb"), "rw-coordination")
    out = await create_queue(aws.sqs, "out")
    await sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=await queue_arn(aws.sqs, out))
    parked = await create_queue(aws.sqs, "parked")
    names = ("to-lambda", "to-sqs", "to-sfn", "to-sns", "to-events")
    dlqs = {n: await create_queue(aws.sqs, f"{n}-dlq") for n in names}
    for name, url in dlqs.items():
        await aws.sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": 1, "q": name}))
        await aws.sqs.send_message(QueueUrl=url, MessageBody="not json: parked")
    fails = json.dumps({"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "E"}}})
    failing = (
        await aws.sfn.create_state_machine(name="failing", definition=fails, roleArn=ROLE_ARN)
    )["stateMachineArn"]
    execution = (await aws.sfn.start_execution(stateMachineArn=failing, input="{}"))["executionArn"]
    dlqs["to-auto"] = await create_queue(aws.sqs, "to-auto-dlq")
    await wait_for(lambda: _failed(aws, execution))
    await aws.sqs.send_message(QueueUrl=dlqs["to-auto"], MessageBody=_status_change(execution))
    settings = config(proxy.url, machine["stateMachineArn"], topic, failing)
    proxy.clear()
    proxy.add(
        Rule("lambda", "Invoke", "answer", path="/functions/decide/", extra={"action": "deliver"})
    )

    registry = CollectorRegistry()
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(functools.partial(serve, settings, stop, registry=registry))

        async def drained() -> bool:
            return all([await depth(aws.sqs, u) == 0 for u in dlqs.values()])

        await wait_for(drained, timeout=60)

        def kept_once() -> bool:  # the keeper read the parking queue (its lease, too)
            labels = {"parking_queue": "parked", "result": "complete"}
            return bool(registry.get_sample_value("retry_worker_keeper_passes_total", labels))

        await wait_for(kept_once, timeout=30)
        stop.set()
    assert await depth(aws.sqs, parked) == 3  # not JSON: Lambda, Step Functions, EventBridge
    daemon_calls = made(proxy)
    policy = build_policy(settings, ACCOUNT)
    assert {a for a, _ in daemon_calls} >= {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:SendMessage",
        "lambda:InvokeFunction",
        "states:StartExecution",
        "states:RedriveExecution",
        "sns:Publish",
        "events:PutEvents",
        "dynamodb:UpdateItem",
        "sqs:ChangeMessageVisibility",  # the keeper releases what is not due
    }
    assert refused(policy, daemon_calls) == []

    # the operator's commands, against the same configuration
    await (await aws.client("s3")).create_bucket(Bucket="rw-backups")
    proxy.clear()
    tree = settings.model_dump(mode="json")
    tree.pop("discovery", None)
    cli = Cli(tmp_path, tree)
    for args in (
        ("status",),
        ("parked", "summary", "to-sqs"),
        ("parked", "list", "to-sqs"),
        ("parked", "export", "to-sqs", "--out", "export.jsonl"),
        ("parked", "replay", "to-lambda", "--yes"),
        ("parked", "replay", "to-sqs", "--to", "target", "--yes"),
        ("parked", "purge", "to-sns", "--yes"),
        ("restore", "export.jsonl", "--to", "to-sqs-dlq", "--yes"),
        ("pause", "to-sfn", "--reason", "test"),
        ("resume", "to-sfn"),
    ):
        result = await cli(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    operator_calls = made(proxy)
    assert {a for a, _ in operator_calls} >= {
        "sqs:TagQueue",
        "sqs:UntagQueue",
        "sqs:DeleteMessage",
        "s3:PutObject",  # the replay's and the purge's backups, in S3
        "s3:ListBucket",  # never overwritten: looked for first
    }
    assert refused(operator_policy(settings, ACCOUNT), operator_calls) == []
