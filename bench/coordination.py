"""`make bench`: what coordination costs — DynamoDB requests per replica per hour at the
default heartbeat (10 s), for a fleet of idle replicas, and per message for a hand-off target
(the loop count).

Starts the emulator in its own process, a coordination table and REPLICAS daemons with one
idle DLQ each (default settings but the endpoint), lets them run for --window seconds after
all have seen each other, and reads each one's `retry_worker_aws_requests_total{service=
"dynamodb"}` before and after. Then sends --messages messages to a DLQ whose target is a
Lambda `Event` invoke (a hand-off: every delivery is loop-counted) and reads the requests again.
Last, 300 messages to a Lambda target limited to 10 msg/s: the fleet's delivery rate, timed at
the target (the daemons talk to the emulator through the call-counting proxy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import yaml
from aiobotocore.session import get_session
from prometheus_client.parser import text_string_to_metric_families

from bench.redrive import ENV, free_port, start_emulator
from worker.emulator import create_coordination_table, create_function, create_role
from worker.emulator.proxy import FaultProxy

TABLE = "coordination"
RATE, BURST, RATED = 10.0, 10, 300


async def setup(url: str) -> str:
    session = get_session()
    kwargs = {"region_name": "us-east-1", "endpoint_url": url}
    async with (
        session.create_client("sqs", **kwargs) as sqs,
        session.create_client("dynamodb", **kwargs) as ddb,
        session.create_client("lambda", **kwargs) as lam,
        session.create_client("iam", **kwargs) as iam,
    ):
        no_docker = json.dumps({"lambda": {"use_docker": False}}).encode()
        request = urllib.request.Request(url + "/moto-api/config", data=no_docker, method="POST")  # noqa: S310
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310 - loopback
        await create_role(iam)
        await create_function(lam, "handoff")
        await create_function(lam, "rated")
        await sqs.create_queue(QueueName="rated-dlq")
        await create_coordination_table(ddb, TABLE)
        await sqs.create_queue(QueueName="parked")
        await sqs.create_queue(QueueName="idle-dlq")
        return str((await sqs.create_queue(QueueName="handoff-dlq"))["QueueUrl"])


async def send(url: str, dlq: str, count: int) -> None:
    session = get_session()
    async with session.create_client("sqs", region_name="us-east-1", endpoint_url=url) as sqs:
        for start in range(0, count, 10):
            entries = [
                {"Id": str(i), "MessageBody": json.dumps({"n": i})}
                for i in range(start, min(count, start + 10))
            ]
            await sqs.send_message_batch(QueueUrl=dlq, Entries=entries)


def config(url: str, port: int) -> dict[str, object]:
    return {
        "aws": {"endpoint_url": url},
        "logging": {"format": "json"},
        "http": {"host": "127.0.0.1", "port": port},
        "coordination": {"backend": "dynamodb", "table": TABLE},
        "defaults": {"policy": {"parking_queue": "parked"}},
        "queues": {
            "idle": {"name": "idle-dlq", "target": {"kind": "sqs", "queue": "parked"}},
            "handoff": {
                "name": "handoff-dlq",
                "target": {"kind": "lambda", "function": "handoff", "invocation_type": "Event"},
            },
            "rated": {
                "name": "rated-dlq",
                "receive": {"idle_max_interval_seconds": 0},  # the rate, not the idle checks
                "target": {
                    "kind": "lambda",
                    "function": "rated",
                    "rate_limit": {"per_second": RATE, "burst": BURST},
                },
            },
        },
    }


def scrape(port: int) -> dict[tuple[str, ...], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "retry_worker_aws_requests_total" and s.labels["service"] == "dynamodb":
                out[("dynamodb", s.labels["operation"])] = s.value
            elif s.name == "retry_worker_coordination_members":
                out[("members",)] = s.value
            elif s.name == "retry_worker_deliveries_total" and s.labels["queue"] == "handoff":
                out[("handoff",)] = out.get(("handoff",), 0) + s.value
    return out


def wait(condition, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.5)


def requests(before: dict, after: dict) -> Counter[str]:  # type: ignore[type-arg]
    return Counter({k[1]: after[k] - before.get(k, 0.0) for k in after if k[0] == "dynamodb"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--window", type=float, default=120.0)
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    os.environ.update({k: v for k, v in ENV.items() if k.startswith("AWS_")})
    emulator, url = start_emulator()
    proxy = FaultProxy(url).start()
    proxy.keep_journal = False
    daemons: list[subprocess.Popen[bytes]] = []
    try:
        dlq = asyncio.run(setup(url))
        folder = Path(tempfile.mkdtemp(prefix="bench-coordination-"))
        ports = [free_port() for _ in range(args.replicas)]
        env = {**ENV, "RETRY_WORKER_CONFIG_DIR": str(folder)}
        for i, port in enumerate(ports):
            path = folder / f"r{i}.yaml"
            path.write_text(yaml.safe_dump(config(proxy.url, port)))
            daemons.append(
                subprocess.Popen(
                    [sys.executable, "-m", "worker", "run", "--config", str(path)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=env,
                )
            )
        wait(lambda: all(scrape(p).get(("members",)) == args.replicas for p in ports), 120)
        before = [scrape(p) for p in ports]
        started = time.monotonic()
        time.sleep(args.window)
        after = [scrape(p) for p in ports]
        hours = (time.monotonic() - started) / 3600
        print(
            f"coordination cost, {args.replicas} idle replicas, heartbeat 10 s, "
            f"{args.window:.0f} s window:"
        )
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            counted = requests(b, a)
            per_hour = {op: round(n / hours) for op, n in sorted(counted.items())}
            print(f"  replica {i}: {round(sum(counted.values()) / hours)} requests/h {per_hour}")
        asyncio.run(send(url, dlq, args.messages))
        wait(lambda: sum(scrape(p).get(("handoff",), 0) for p in ports) >= args.messages, 300)
        final = [scrape(p) for p in ports]
        loop_writes = sum(requests(a, f)["UpdateItem"] for a, f in zip(after, final, strict=True))
        beats = sum(requests(a, f)["Query"] for a, f in zip(after, final, strict=True))
        print(
            f"hand-off target, {args.messages} messages: {loop_writes - beats:.0f} loop-count "
            f"writes ({(loop_writes - beats) / args.messages:.2f} per message)"
        )
        print(
            f"fleet rate, {RATED} messages to a target limited to {RATE:.0f} msg/s "
            f"(burst {BURST}): {rated(url, proxy):.2f} msg/s steady"
        )
    finally:
        for d in daemons:
            d.terminate()
        for d in daemons:
            d.wait(30)
        proxy.stop()
        emulator.terminate()


def rated(url: str, proxy: FaultProxy) -> float:
    """Calls per second at the target after the fleet's burst."""
    proxy.clear()
    asyncio.run(send(url, url.rstrip("/") + "/123456789012/rated-dlq", RATED))
    wait(lambda: proxy.count("lambda", "Invoke") >= RATED, 300)
    steady = proxy.times("lambda", "Invoke")[BURST:]
    return (len(steady) - 1) / (steady[-1] - steady[0])


if __name__ == "__main__":
    main()
