"""A dead target for 60 seconds, with the default settings: how many calls does it get, and
how many receives do its queue's messages cost meanwhile?

The worker runs in-process against the local emulator in its own process, behind a counting
proxy that answers every Lambda Invoke with a 500. 100 failed messages wait in the DLQ.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import time

import anyio
from aiobotocore.session import get_session
from prometheus_client import CollectorRegistry

from bench.redrive import ENV, start_emulator
from worker.daemon.app import serve
from worker.emulator import create_function, create_queue, create_role
from worker.emulator.proxy import FaultProxy, Rule
from worker.logs import configure_logging
from worker.settings import LoggingSettings, Settings


async def seed(url: str, messages: int) -> None:
    kw = {"region_name": "us-east-1", "endpoint_url": url}
    session = get_session()
    async with (
        session.create_client("sqs", **kw) as sqs,
        session.create_client("lambda", **kw) as lam,
        session.create_client("iam", **kw) as iam,
    ):
        await create_role(iam)
        await create_function(lam, "down")
        await create_queue(sqs, "parked")
        dlq = await create_queue(sqs, "down-dlq")
        for start in range(0, messages, 10):
            entries = [
                {"Id": str(i), "MessageBody": f'{{"n": {i}}}'} for i in range(start, start + 10)
            ]
            await sqs.send_message_batch(QueueUrl=dlq, Entries=entries)


async def outage(proxy: FaultProxy, seconds: float) -> None:
    settings = Settings.model_validate(
        {
            "aws": {"endpoint_url": proxy.url},
            "http": {"host": "127.0.0.1", "port": 0},
            "defaults": {"policy": {"parking_queue": "parked"}},
            "queues": {
                "down": {"name": "down-dlq", "target": {"kind": "lambda", "function": "down"}}
            },
        }
    )
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(functools.partial(serve, settings, stop, registry=CollectorRegistry()))
        await anyio.sleep(seconds)  # the measurement window
        stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--messages", type=int, default=100)
    args = parser.parse_args()
    os.environ.update(ENV)
    configure_logging(LoggingSettings(level="WARNING"))
    emulator, url = start_emulator()
    proxy = FaultProxy(url).start()
    try:
        asyncio.run(seed(url, args.messages))
        proxy.clear()
        proxy.add(Rule("lambda", "Invoke", "error", status=500, code="ServiceException"))
        started = time.monotonic()
        anyio.run(outage, proxy, args.seconds)
        took = time.monotonic() - started
        print(f"dead target for {took:.0f} s, default settings, {args.messages} messages waiting:")
        print(f"  target calls (Invoke):      {proxy.count('lambda', 'Invoke')}")
        print(f"  receive calls on its queue: {proxy.count('sqs', 'ReceiveMessage')}")
        print(f"  all AWS calls:              {proxy.count()}")
    finally:
        proxy.stop()
        emulator.terminate()
        emulator.wait()


if __name__ == "__main__":
    main()
