"""What the demo runs against: its targets, DLQs and failed messages (`seed`), the failures that
keep arriving (`trickle`) and the carrier that comes back (`carrier_returns`)."""

from __future__ import annotations

import json
import sys
from contextlib import AsyncExitStack
from typing import Any

import anyio

from worker.emulator import (
    ROLE_ARN,
    create_function,
    create_queue,
    create_role,
    create_source_with_dlq,
)


async def seed(session: Any, url: str) -> str:
    """Targets, DLQs and failed messages; returns the state machine ARN."""
    kw: dict[str, Any] = {"region_name": "us-east-1", "endpoint_url": url}
    async with AsyncExitStack() as stack:
        sqs = await stack.enter_async_context(session.create_client("sqs", **kw))
        lam = await stack.enter_async_context(session.create_client("lambda", **kw))
        sfn = await stack.enter_async_context(session.create_client("stepfunctions", **kw))
        await create_role(await stack.enter_async_context(session.create_client("iam", **kw)))
        await create_queue(sqs, "retry-parked", MessageRetentionPeriod="60")
        for name in ("orders", "payments", "ledger"):
            await create_function(lam, name)
        orders = await create_queue(sqs, "orders-dlq")
        machine = await sfn.create_state_machine(
            name="fulfilment", definition=_fulfilment(orders), roleArn=ROLE_ARN
        )
        for i in range(12):
            # the two big orders (over 100: the rule parks them) come first, in the first receive
            amount = 10 * ((i + 10) % 12) + 5
            order = {"orderId": f"o-{1000 + i}", "amount": amount, "currency": "EUR"}
            await sqs.send_message(
                QueueUrl=orders,
                MessageBody=json.dumps(order),
                MessageAttributes={
                    "RequestID": {"DataType": "String", "StringValue": f"req-{i}"},
                    "ErrorCode": {"DataType": "Number", "StringValue": "200"},
                    "ErrorMessage": {"DataType": "String", "StringValue": "Task timed out"},
                },
            )
        fulfilment = await create_queue(sqs, "fulfilment-dlq")
        for i in range(6):
            await sqs.send_message(
                QueueUrl=fulfilment, MessageBody=json.dumps({"shipment": f"s-{i}"})
            )
        # a poison message: Step Functions input must be JSON
        await sqs.send_message(QueueUrl=fulfilment, MessageBody="<shipment id='broken'/>")
        source, dlq = await create_source_with_dlq(sqs, "invoices", "invoices-dlq", 2)
        for i in range(5):
            await sqs.send_message(QueueUrl=source, MessageBody=json.dumps({"invoice": i}))
        while (
            int(
                (
                    await sqs.get_queue_attributes(
                        QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"]
                    )
                )["Attributes"]["ApproximateNumberOfMessages"]
            )
            < 5
        ):  # a consumer that keeps failing: SQS dead-letters after 2 receives
            await sqs.receive_message(QueueUrl=source, MaxNumberOfMessages=10, VisibilityTimeout=0)
        payments = await create_queue(sqs, "payments-dlq")
        for i in range(15):
            body = json.dumps({"paymentId": f"p-{i}", "amount": 100 + i})
            await sqs.send_message(QueueUrl=payments, MessageBody=body)
        ledger = await create_queue(sqs, "ledger-dlq")
        await sqs.send_message(QueueUrl=ledger, MessageBody=json.dumps({"entry": "always-fails"}))
        return str(machine["stateMachineArn"])


CARRIER_BACK_AFTER_SECONDS = 4.0


def _fulfilment(orders_url: str) -> str:
    """`Pick` (a Pass), then `Ship`: a message to the queue `carrier`, which does not exist
    until the carrier comes back (`_carrier_returns`): until then every execution fails at
    `Ship`; after, the next attempt redrives it from `Ship` and `Pick` does not run again."""
    carrier = orders_url.replace("orders-dlq", "carrier")
    ship = {
        "Type": "Task",
        "Resource": "arn:aws:states:::sqs:sendMessage",
        "Parameters": {"QueueUrl": carrier, "MessageBody.$": "$"},
        "End": True,
    }
    return json.dumps(
        {"StartAt": "Pick", "States": {"Pick": {"Type": "Pass", "Next": "Ship"}, "Ship": ship}}
    )


async def carrier_returns(session: Any, url: str) -> None:
    await anyio.sleep(CARRIER_BACK_AFTER_SECONDS)
    kw: dict[str, Any] = {"region_name": "us-east-1", "endpoint_url": url}
    async with session.create_client("sqs", **kw) as sqs:
        await create_queue(sqs, "carrier")
    print(
        "[demo] the carrier is back: failed fulfilment executions are redriven from `Ship` "
        "(RedriveExecution); `Pick` does not run again",
        file=sys.stderr,
        flush=True,
    )


async def trickle(session: Any, url: str) -> None:
    """New failures keep arriving, as they do in production: one failed order every 2 s."""
    kw: dict[str, Any] = {"region_name": "us-east-1", "endpoint_url": url}
    async with session.create_client("sqs", **kw) as sqs:
        queue = (await sqs.get_queue_url(QueueName="orders-dlq"))["QueueUrl"]
        for i in range(2000, 10_000):
            await anyio.sleep(2)
            body = json.dumps({"orderId": f"o-{i}", "amount": i % 97, "currency": "EUR"})
            await sqs.send_message(QueueUrl=queue, MessageBody=body)
