"""The floor for `bench.fast`: a bare aiobotocore receive → send → delete loop, one task per
DLQ (or `--tasks N` per DLQ), no policy, no metrics. Run as a process: `python -m
bench.bare_loop ENDPOINT TOTAL DLQ=OUT... [--tasks N]`; prints `ready` once its clients exist,
then `done MOVED REQUESTS`."""

from __future__ import annotations

import asyncio
import sys

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session


async def move(sqs, dlq: str, out: str, moved: list[int], total: int) -> None:
    while sum(moved) < total:
        response = await sqs.receive_message(
            QueueUrl=dlq,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            continue
        entries = [
            {"Id": str(i), "MessageBody": m["Body"], **_attributes(m)}
            for i, m in enumerate(messages)
        ]
        sent = await sqs.send_message_batch(QueueUrl=out, Entries=entries)
        ok = {item["Id"] for item in sent.get("Successful", [])}
        receipts = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
            for i, m in enumerate(messages)
            if str(i) in ok
        ]
        if receipts:
            await sqs.delete_message_batch(QueueUrl=dlq, Entries=receipts)
        moved.append(len(receipts))


def _attributes(message: dict) -> dict:
    attributes = message.get("MessageAttributes")
    if not attributes:
        return {}
    keys = ("DataType", "StringValue", "BinaryValue")
    return {
        "MessageAttributes": {
            name: {k: v for k, v in attr.items() if k in keys} for name, attr in attributes.items()
        }
    }


async def main(endpoint: str, total: int, pairs: list[tuple[str, str]], tasks: int = 1) -> None:
    config = AioConfig(max_pool_connections=64, retries={"mode": "standard"})
    session = get_session()
    async with session.create_client(
        "sqs", region_name="us-east-1", endpoint_url=endpoint, config=config
    ) as sqs:
        requests = [0]

        def count(**_: object) -> None:
            requests[0] += 1

        sqs.meta.events.register("before-send", count)
        print("ready", flush=True)
        moved: list[int] = []
        await asyncio.gather(
            *(move(sqs, dlq, out, moved, total) for dlq, out in pairs for _ in range(tasks))
        )
        print("done", sum(moved), requests[0], flush=True)


if __name__ == "__main__":
    args = sys.argv[3:]
    tasks = 1
    if "--tasks" in args:
        at = args.index("--tasks")
        tasks = int(args[at + 1])
        del args[at : at + 2]
    queues = [tuple(arg.split("=", 1)) for arg in args]
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), queues, tasks))  # type: ignore[arg-type]
