"""The emulator keeps FIFO order as SQS does (worker/emulator/fidelity.py): moto alone returns
a group's later message ahead of earlier ones whose consumer died, and re-hides a visible
message on a visibility change — both found by the chaos test's group-order check."""

from __future__ import annotations

import subprocess
import sys
import time

import aiobotocore.session
import pytest

from tests.fleet import ROOT
from worker.emulator import create_queue
from worker.emulator.journal import SENT_AT

pytestmark = pytest.mark.anyio


async def fifo_with(aws, ids: range) -> str:  # groups g0..g6 by id
    url = await create_queue(aws.sqs, "order.fifo", FifoQueue="true")
    for start in range(ids.start, ids.stop, 10):
        entries = [
            {
                "Id": str(i),
                "MessageBody": str(i),
                "MessageGroupId": f"g{i % 7}",
                "MessageDeduplicationId": str(i),
            }
            for i in range(start, min(start + 10, ids.stop))
        ]
        await aws.sqs.send_message_batch(QueueUrl=url, Entries=entries)
    return url


async def test_messages_whose_consumer_died_come_back_first_and_in_order(aws, emulator):
    """One group: its first four in flight with a consumer that dies, the fifth waiting. moto
    alone returned the fourth and fifth, ahead of the first three."""
    url = await create_queue(aws.sqs, "order.fifo", FifoQueue="true")
    for i in range(5):
        await aws.sqs.send_message(
            QueueUrl=url, MessageBody=str(i), MessageGroupId="g", MessageDeduplicationId=str(i)
        )
    taken = await aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=4, VisibilityTimeout=1)
    assert [m["Body"] for m in taken["Messages"]] == ["0", "1", "2", "3"]
    deadline = time.monotonic() + 10
    while not (
        got := (
            await aws.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30, WaitTimeSeconds=1
            )
        ).get("Messages")
    ):
        assert time.monotonic() < deadline
    assert [m["Body"] for m in got] == ["0", "1", "2", "3", "4"]


async def test_a_visible_message_s_visibility_is_not_changed(aws, emulator):
    """AWS answers OK and changes nothing; moto hid the message again without counting it in
    flight, which unlocked its FIFO group while it was hidden."""
    url = await fifo_with(aws, range(0, 2))
    [message] = (await aws.sqs.receive_message(QueueUrl=url, VisibilityTimeout=30))["Messages"]
    handle = message["ReceiptHandle"]
    await aws.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    await aws.sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=30
    )
    entry = {"Id": "1", "ReceiptHandle": handle, "VisibilityTimeout": 30}
    answer = await aws.sqs.change_message_visibility_batch(QueueUrl=url, Entries=[entry])
    assert [s["Id"] for s in answer["Successful"]] == ["1"]
    # still visible, and first in its group: nobody holds it
    again = await aws.sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30
    )
    assert [m["Body"] for m in again["Messages"]] == ["0", "1"]


async def test_a_fifo_delete_with_an_expired_handle_is_refused(aws, emulator):
    url = await fifo_with(aws, range(0, 1))
    [message] = (await aws.sqs.receive_message(QueueUrl=url, VisibilityTimeout=30))["Messages"]
    handle = message["ReceiptHandle"]
    await aws.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    answer = await aws.sqs.delete_message_batch(
        QueueUrl=url, Entries=[{"Id": "1", "ReceiptHandle": handle}]
    )
    assert [f["Code"] for f in answer["Failed"]] == ["InvalidParameterValue"]
    assert (await aws.sqs.receive_message(QueueUrl=url))["Messages"][0]["Body"] == "0"


async def test_the_journal_records_when_a_request_left_its_client(proxy):
    """The fleet's timing tests count calls in windows of the daemon's clock (tests/stamped.py):
    a stamped request is recorded when it was sent, not when the proxy read it; a stamp from
    the future (another clock) is ignored; the calls come back in the order they were sent."""
    now = time.monotonic()
    sent = [now - 5, now - 9, now + 3600]
    stamps = iter(sent)

    def stamp(request, **_):
        request.headers[SENT_AT] = repr(next(stamps))

    session = aiobotocore.session.get_session()
    async with session.create_client(
        "sqs",
        region_name="us-east-1",
        endpoint_url=proxy.url,
        aws_access_key_id="me",
        aws_secret_access_key="x",
    ) as sqs:
        sqs.meta.events.register("before-send", stamp)
        before = time.monotonic()
        for _ in range(3):
            await sqs.list_queues()
        after = time.monotonic()
    times = proxy.times("sqs", "ListQueues")
    assert len(times) == 3
    assert times[:2] == [sent[1], sent[0]]  # as stamped, in the order they were sent
    assert before <= times[2] <= after  # the future stamp: when the proxy read it
    assert [who for _, who in proxy.callers("sqs", "ListQueues")] == ["me"] * 3


def test_the_fleets_daemons_stamp_every_request():
    """`python -m tests.stamped` (tests/fleet.py) stamps every client of every session."""
    script = """
import anyio, tests.stamped as stamped
from aiobotocore.session import get_session
stamped.stamp_every_session()
class Request:
    headers = {}
async def main():
    async with get_session().create_client(
        "sqs", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    ) as sqs:
        await sqs.meta.events.emit("before-send.sqs.ListQueues", request=Request)
    print(float(Request.headers[stamped.SENT_AT]) > 0)
anyio.run(main)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "True", out.stderr


@pytest.mark.parametrize("invocation", ["RequestResponse", "Event", "DryRun"])
async def test_a_function_that_was_never_created_is_not_found(aws, invocation):
    """moto without Docker answered any function name (`check-config --aws` found nothing
    wrong with a typo in one); Lambda answers ResourceNotFoundException."""
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as refused:
        await aws.lambda_.invoke(FunctionName="never-created", InvocationType=invocation)
    assert refused.value.response["Error"]["Code"] == "ResourceNotFoundException"
