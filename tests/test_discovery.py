"""Discovery: DLQs with the prefix are served as they appear and released when deleted."""

from __future__ import annotations

import functools
import json

import anyio
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import make_settings
from tests.helpers import depth, drain, wait_for
from worker.config import cross_field_errors
from worker.daemon.app import serve
from worker.emulator import create_queue, queue_arn

pytestmark = pytest.mark.anyio


async def test_queues_are_picked_up_and_released_without_a_restart(aws, proxy):
    await create_queue(aws.sqs, "parked")
    out = await create_queue(aws.sqs, "app-out")
    first = await create_queue(aws.sqs, "retry-first-dlq")
    await create_queue(aws.sqs, "other-dlq")  # no prefix: never served
    out_arn = await queue_arn(aws.sqs, out)
    discovery = {
        "prefix": "retry-",
        "refresh_seconds": 1,
        "defaults": {"target": {"kind": "auto", "allow": [out_arn]}},
    }
    settings = make_settings(
        proxy.url, {}, discovery=discovery, http={"host": "127.0.0.1", "port": 0}
    )
    registry = CollectorRegistry()
    stop = anyio.Event()
    attrs = {
        "RULE_ARN": {
            "DataType": "String",
            "StringValue": "arn:aws:events:us-east-1:123456789012:rule/r",
        },
        "TARGET_ARN": {"DataType": "String", "StringValue": out_arn},
        "ERROR_CODE": {"DataType": "String", "StringValue": "SDK_CLIENT_ERROR"},
    }
    async with anyio.create_task_group() as tg:
        runtime = await tg.start(functools.partial(serve, settings, stop, registry=registry))
        health = runtime.health
        await wait_for(lambda: "retry-first-dlq" in health.pollers, timeout=10)
        assert "other-dlq" not in health.queues

        second = await create_queue(aws.sqs, "retry-second-dlq")  # appears while running
        await aws.sqs.send_message(
            QueueUrl=second, MessageBody=json.dumps({"n": 2}), MessageAttributes=attrs
        )
        await wait_for(lambda: "retry-second-dlq" in health.pollers, timeout=10)

        async def delivered() -> bool:
            return await depth(aws.sqs, out) == 1

        await wait_for(delivered, timeout=15)

        await aws.sqs.delete_queue(QueueUrl=first)  # disappears while running
        await wait_for(lambda: "retry-first-dlq" not in health.queues, timeout=15)
        errors = registry.get_sample_value(
            "retry_worker_receive_requests_total", {"queue": "retry-first-dlq", "result": "error"}
        )
        assert (errors or 0) <= 1, "a deleted queue does not pile up errors"
        assert "retry-second-dlq" in health.pollers
        stop.set()

    [message] = await drain(aws.sqs, out)
    assert json.loads(message["Body"]) == {"n": 2}


@pytest.mark.parametrize(
    ("discovery", "expected"),
    [
        (
            {"prefix": "retry-", "defaults": {"target": {"kind": "lambda", "function": "f"}}},
            "discovery.defaults.target.kind: discovered queues need `kind: auto`",
        ),
        (
            {
                "prefix": "retry-",
                "defaults": {
                    "target": {"kind": "auto", "allow": ["*"]},
                    "policy": {"parking_queue": "retry-parked"},
                },
            },
            "discovery.defaults.policy.parking_queue: starts with the discovery prefix (it would be served as a DLQ)",
        ),
        (
            {"prefix": "retry-", "defaults": {}},
            "discovery.defaults.target: Field required",
        ),
    ],
)
def test_discovery_settings_are_checked_at_boot(discovery, expected):
    settings = make_settings("http://127.0.0.1:1", {}, discovery=discovery)
    assert expected in cross_field_errors(settings)


def test_iam_policy_for_discovery_is_prefix_scoped():
    from worker.ops.iam import build_policy

    allow = ["arn:aws:sqs:us-east-1:123456789012:app-*"]
    settings = make_settings(
        "http://127.0.0.1:1",
        {},
        discovery={"prefix": "retry-", "defaults": {"target": {"kind": "auto", "allow": allow}}},
    )
    statements = {s["Sid"]: s for s in build_policy(settings, "123456789012")["Statement"]}
    assert statements["ReadDeadLetterQueues"]["Resource"] == [
        "arn:aws:sqs:us-east-1:123456789012:retry-*"
    ]
    assert statements["ListQueuesForDiscovery"] == {
        "Sid": "ListQueuesForDiscovery",
        "Effect": "Allow",
        "Action": ["sqs:ListQueues"],
        "Resource": ["*"],
    }
    stars = [s["Sid"] for s in statements.values() if "*" in s["Resource"]]
    assert stars == ["ListQueuesForDiscovery"]
