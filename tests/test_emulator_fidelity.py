"""The emulator keeps FIFO order as SQS does (worker/emulator/fidelity.py): moto alone returns
a group's later message ahead of earlier ones whose consumer died, and re-hides a visible
message on a visibility change — both found by the chaos test's group-order check."""

from __future__ import annotations

import time

import pytest

from worker.emulator import create_queue

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
