"""`kind: auto`: the target the message names, only inside `allow`; never anything else."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import depth, drain
from worker.emulator import create_function, create_queue, queue_arn
from worker.emulator.proxy import Rule
from worker.settings import Settings

pytestmark = pytest.mark.anyio
ACCOUNT = "123456789012"
PAYLOAD = '{"orderId":  9, "lines": [1,2]}'


def destination_record(function: str, payload: str) -> str:
    arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{function}"
    return (
        '{"version":"1.0","timestamp":"2026-11-27T10:00:00.000Z",'
        f'"requestContext":{{"requestId":"r","functionArn":"{arn}","condition":"RetriesExhausted"}},'
        f'"requestPayload":{payload},'
        '"responseContext":{"statusCode":200,"functionError":"Unhandled"}}'
    )


async def test_auto_delivers_to_named_targets_inside_allow_only(aws, proxy, worker_stack):
    await create_function(aws.lambda_, "dest-orders")
    await create_function(aws.lambda_, "payroll")
    eb_target = await create_queue(aws.sqs, "eb-target")
    dlq = await create_queue(aws.sqs, "generic-dlq")
    parked = await create_queue(aws.sqs, "parked")
    event = json.dumps({"version": "0", "source": "shop", "detail-type": "X", "detail": {"a": 1}})
    attrs = {
        "RULE_ARN": {
            "DataType": "String",
            "StringValue": f"arn:aws:events:us-east-1:{ACCOUNT}:rule/r",
        },
        "TARGET_ARN": {"DataType": "String", "StringValue": await queue_arn(aws.sqs, eb_target)},
        "ERROR_CODE": {"DataType": "String", "StringValue": "SDK_CLIENT_ERROR"},
    }
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=destination_record("dest-orders", PAYLOAD))
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=event, MessageAttributes=attrs)
    await aws.sqs.send_message(
        QueueUrl=dlq, MessageBody=destination_record("payroll", '{"pay": 1}')
    )
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="names nothing")
    allow = [
        f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:dest-*",
        f"arn:aws:sqs:us-east-1:{ACCOUNT}:eb-*",
    ]
    queues = {"generic": {"name": "generic-dlq", "target": {"kind": "auto", "allow": allow}}}
    worker = Worker(make_settings(proxy.url, queues), worker_stack)
    poller = await worker.poller("generic")
    payroll = proxy.add(Rule("lambda", "Invoke", "delay", seconds=0, path="/functions/payroll/"))

    while worker.settled("generic", "deleted") + worker.settled("generic", "parked") < 4:
        await poller.run_once()

    assert proxy.requests("lambda", "Invoke") == [json.loads(PAYLOAD)]
    assert payroll.applied == 0, "a function outside allow is never called"
    [forwarded] = await drain(aws.sqs, eb_target)
    assert forwarded["Body"] == event
    assert "RULE_ARN" not in forwarded.get("MessageAttributes", {})
    reasons = {
        m["Body"]: m["MessageAttributes"]["retry-worker.reason"]["StringValue"]
        for m in await drain(aws.sqs, parked)
    }
    assert reasons == {
        destination_record("payroll", '{"pay": 1}'): "target_not_allowed",
        "names nothing": "no_target",
    }
    assert await depth(aws.sqs, dlq) == 0


def test_iam_policy_for_auto_grants_exactly_the_allow_patterns():
    from worker.ops.iam import build_policy

    allow = [
        f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:dest-*",
        f"arn:aws:sqs:us-east-1:{ACCOUNT}:eb-*",
    ]
    settings = Settings(
        queues={
            "g": {
                "url": f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/generic-dlq",
                "target": {"kind": "auto", "allow": allow},
                "policy": {
                    "parking_queue": f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/parked"
                },
            }
        }
    )
    statements = {s["Sid"]: s for s in build_policy(settings)["Statement"]}
    auto = [s for sid, s in statements.items() if sid.startswith("AutoTargets")]
    granted = {(a, r) for s in auto for a in s["Action"] for r in s["Resource"]}
    assert granted == {
        ("lambda:InvokeFunction", allow[0]),
        ("sqs:SendMessage", allow[1]),
        ("sqs:GetQueueUrl", allow[1]),
        ("sqs:GetQueueAttributes", allow[1]),  # the queue's MaximumMessageSize
    }
