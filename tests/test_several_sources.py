"""A DLQ fed by several source queues (issue 27, defect 6): a parked message keeps the queue
that dead-lettered it, and a replay, to the target or through the DLQ, goes back to that queue.
Real SQS names it in `DeadLetterQueueSourceArn`; the emulator never does, so the proxy adds it
to the DLQ's first receive as SQS would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import drain, run_until
from tests.test_operator_loop import Cli
from worker.aws.sqs import redrive_sources
from worker.core.envelope import DlqMessage
from worker.emulator import create_queue, create_source_with_dlq, queue_arn
from worker.emulator.proxy import Rule
from worker.settings import SqsTarget
from worker.targets.base import Delivery
from worker.targets.sqs import SqsSender

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("to", ["target", "dlq"])
async def test_a_parked_message_replays_to_the_queue_that_dead_lettered_it(
    aws, proxy, worker_stack, tmp_path: Path, to: str
):
    source_a, dlq = await create_source_with_dlq(aws.sqs, "src-a", "shared-dlq", 1)
    policy = {"deadLetterTargetArn": await queue_arn(aws.sqs, dlq), "maxReceiveCount": 1}
    source_b = await create_queue(aws.sqs, "src-b", RedrivePolicy=json.dumps(policy))
    parked = await create_queue(aws.sqs, "parked")
    queues = {
        "shared": {
            "name": "shared-dlq",
            "target": {"kind": "sqs", "source": True},
            "policy": {"max_attempts": 1},
        }
    }
    settings = make_settings(proxy.url, queues)
    worker = Worker(settings, worker_stack)
    poller = await worker.poller("shared")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="from b")
    b_arn = await queue_arn(aws.sqs, source_b)
    named = {"DeadLetterQueueSourceArn": b_arn}
    # SQS names the source only on what it dead-lettered itself: the first receive.
    names = Rule("sqs", "ReceiveMessage", "system_attributes", extra=named, body="shared-dlq")
    names.times = 1
    proxy.add(names)
    # src-b is refused for a while (each of the send's three tries): the message is parked.
    proxy.add(Rule("sqs", "SendMessageBatch", "fail_entries", body='src-b"', times=3))

    await run_until(poller, lambda: worker.settled("shared", "parked") == 1)

    [message] = (
        await aws.sqs.receive_message(
            QueueUrl=parked, MessageAttributeNames=["All"], VisibilityTimeout=0
        )
    )["Messages"]
    assert message["MessageAttributes"]["retry-worker.source-arn"]["StringValue"] == b_arn

    cli = Cli(tmp_path, settings.model_dump(mode="json"))
    replay = await cli("parked", "replay", "shared", "--to", to, "--yes")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    if to == "dlq":  # a fresh copy in the DLQ, which SQS does not name: our marker does
        await run_until(poller, lambda: worker.settled("shared", "deleted") == 1)

    assert [m["Body"] for m in await drain(aws.sqs, source_b)] == ["from b"]
    assert await drain(aws.sqs, source_a) == []
    assert await drain(aws.sqs, parked) == []


async def test_a_carried_source_is_used_only_if_it_is_a_redrive_source(aws):
    """Our marker and the parking metadata are message attributes: anyone who can send to the
    queue can write them. A queue they name that does not feed the DLQ is never sent to."""
    _, dlq = await create_source_with_dlq(aws.sqs, "src-a", "one-dlq", 1)
    elsewhere = await create_queue(aws.sqs, "elsewhere")
    sender = SqsSender(
        aws.sqs, SqsTarget(kind="sqs", source=True), await redrive_sources(aws.sqs, dlq)
    )
    forged = DlqMessage(
        "m", "r", "forged", source_arn=await queue_arn(aws.sqs, elsewhere), source_carried=True
    )

    assert await sender.deliver([Delivery(forged, 1)]) == [None]

    assert await drain(aws.sqs, elsewhere) == []
    source_a = (await aws.sqs.get_queue_url(QueueName="src-a"))["QueueUrl"]
    assert [m["Body"] for m in await drain(aws.sqs, source_a)] == ["forged"]  # its one source
