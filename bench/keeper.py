"""What the keeper costs (issue 31): a parking queue of 10,000 parked messages on the fast
server (npm `fauxqs`), a request-counting proxy in front.

Four checks: the first ever (nothing due: it reads everything once, to learn the oldest), the
next (nothing near its end: no pass), a restarted replica's first (it starts from the last
pass's note in the queue's tags: no pass), and one 13 days later (14-day retention, 2-day
margin: everything due, re-parked). For each: the time and the SQS requests per parked
message — beyond the re-park itself (one SendMessageBatch and one DeleteMessageBatch entry a
message) for the last. Target: at most 0.3, and no pass while nothing is near its end. Then
every message is checked to be there once, `kept` counted.

    python -m bench.keeper [--messages 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from contextlib import AsyncExitStack

from prometheus_client import CollectorRegistry

from bench.console import park_many
from bench.fast import counted_fauxqs, create, sqs_client
from worker.aws.clients import Clients
from worker.aws.sqs import SqsQueue
from worker.core.parking import read_parked
from worker.emulator.proxy import FaultProxy
from worker.keeper.keeper import Keeper
from worker.metrics import Metrics
from worker.settings import AwsSettings, KeeperSettings

RETENTION = 14 * 86400
LATER = 13 * 86400


async def bench(url: str, proxy: FaultProxy, messages: int) -> None:
    parking = (await create(url, ["orders-dlq", "parked"]))["parked"]
    async with await sqs_client(url) as sqs:
        await sqs.set_queue_attributes(
            QueueUrl=parking, Attributes={"MessageRetentionPeriod": str(RETENTION)}
        )
        await park_many(sqs, "orders-dlq", parking, messages, lambda i: json.dumps({"n": i}))
    offset = [0.0]
    async with AsyncExitStack() as stack:
        clients = Clients(AwsSettings(endpoint_url=proxy.url), stack, pool=8)
        queue = SqsQueue(await clients.get("sqs"), parking)

        def keeper() -> Keeper:
            return Keeper(
                queue,
                KeeperSettings(),  # 2-day margin, checked every 6 hours
                Metrics(CollectorRegistry()),
                wall=lambda: time.time() + offset[0],
            )

        first = keeper()
        print(f"{'check':<34} {'seconds':>8} {'requests':>9} {'req/msg':>8}")
        for label, later, checking in (
            ("first ever (none due)", 0.0, first),
            ("6 h later (nothing near its end)", 6 * 3600.0, first),
            ("restarted (from the last note)", 6 * 3600.0, keeper()),
            ("13 days later (all due)", LATER, first),
        ):
            offset[0] = later
            before = proxy.count("sqs")
            reparks = proxy.count("sqs", "SendMessageBatch") + proxy.count(
                "sqs", "DeleteMessageBatch"
            )
            started = time.perf_counter()
            done = await checking.check()
            seconds = time.perf_counter() - started
            requests = proxy.count("sqs") - before
            reparked = (
                proxy.count("sqs", "SendMessageBatch")
                + proxy.count("sqs", "DeleteMessageBatch")
                - reparks
            )
            beyond = requests - reparked if done is not None and done.kept else requests
            print(f"{label:<34} {seconds:>8.1f} {requests:>9} {beyond / messages:>8.3f}")
            if done is not None:
                print(f"  pass: read {done.read}, kept {done.kept}, complete {done.complete}")
    async with await sqs_client(url) as sqs:
        for _ in range(120):  # the last pass's copies wait out a delay (its least hold)
            attributes = await sqs.get_queue_attributes(
                QueueUrl=parking, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
            )
            if int(attributes["Attributes"].get("ApproximateNumberOfMessagesDelayed", 0)) == 0:
                break
            await asyncio.sleep(1)
        seen: list[int] = []
        kept: set[str] = set()
        while True:
            got = await sqs.receive_message(
                QueueUrl=parking,
                MaxNumberOfMessages=10,
                VisibilityTimeout=600,
                MessageAttributeNames=["All"],
            )
            batch = got.get("Messages", [])
            if not batch:
                break
            for m in batch:
                view = read_parked(m["Body"], m.get("MessageAttributes", {}))
                assert view is not None
                seen.append(json.loads(view.body)["n"])
                kept.add(view.meta.get("kept", "0"))
    ok = sorted(seen) == list(range(messages))
    print(f"{len(seen)} parked after, kept {sorted(kept)}: {'each once' if ok else 'MISMATCH'}")
    if not ok:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args()
    with counted_fauxqs() as (url, proxy):
        asyncio.run(bench(url, proxy, args.messages))


if __name__ == "__main__":
    main()
