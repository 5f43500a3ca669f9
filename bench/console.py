"""The console on a large parking queue (issue 19): 10,000 parked messages on fauxqs at a
region's 15 ms a request (or `--server moto`: the emulator in its own process, with the
project's speedups, whose receives slow down with every message held), `retry-worker console`
as a process.

Measures, in one run: the first page of the queue (how long the request took, how much of the
snapshot it showed), the whole snapshot, a filtered page over it, the console's memory, and
side by side the command line's `parked summary` of the same queue (a whole read).

    python -m bench.console [--messages 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from aiobotocore.session import get_session

from bench.fast import start_fauxqs
from bench.redrive import ENV, free_port
from worker.core.envelope import DlqMessage
from worker.core.parking import build_parked, parking_metadata

EMULATOR = """
import sys, time
from worker.emulator import MotoServer
server = MotoServer().start()
print(server.url, flush=True)
sys.stdin.read()
"""


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", EMULATOR],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


async def park_many(
    sqs: Any, dlq: str, parking: str, messages: int, body: Callable[[int], str]
) -> None:
    """`messages` parked messages of `dlq` in `parking`: two reasons, five errors, one second
    apart; `body(i)` the i-th original body."""
    limit = asyncio.Semaphore(16)

    async def batch(start: int) -> None:
        entries = []
        for i in range(start, min(messages, start + 10)):
            meta = parking_metadata(
                reason=("max_attempts", "permanent_error")[i % 2],
                attempts=3,
                error=f"Error{i % 5}",
                source_queue=dlq,
                parked_at=1_780_000_000 + i,
            )
            parked = build_parked(DlqMessage(f"m{i}", "r", body(i)), meta)
            assert parked is not None
            entries.append(
                {
                    "Id": str(i - start),
                    "MessageBody": parked.body,
                    "MessageAttributes": parked.attributes,
                }
            )
        async with limit:
            await sqs.send_message_batch(QueueUrl=parking, Entries=entries)

    await asyncio.gather(*(batch(s) for s in range(0, messages, 10)))


async def seed(url: str, messages: int) -> None:
    async with get_session().create_client("sqs", region_name="us-east-1", endpoint_url=url) as sqs:
        dlq = (await sqs.create_queue(QueueName="orders-dlq"))["QueueUrl"]
        parking = (await sqs.create_queue(QueueName="parked"))["QueueUrl"]
        await sqs.create_queue(QueueName="out")

        def body(i: int) -> str:
            return json.dumps({"order": {"id": i, "tier": ("gold", "std")[i % 3 > 0]}})

        await park_many(sqs, dlq, parking, messages, body)


def fetch(url: str) -> tuple[float, str]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as page:  # noqa: S310 - loopback
        text = page.read().decode()
    return time.perf_counter() - started, text


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument(
        "--server",
        choices=("fauxqs", "moto"),
        default="fauxqs",
        help="fauxqs at a region's 15 ms a request (default), or the emulator (moto)",
    )
    args = parser.parse_args()
    os.environ.update({k: v for k, v in ENV.items() if k.startswith("AWS_")})
    emulator, url = start_emulator() if args.server == "moto" else start_fauxqs(15)
    print(f"on {args.server}")
    folder = Path(tempfile.mkdtemp(prefix="bench-console-"))
    try:
        started = time.perf_counter()
        asyncio.run(seed(url, args.messages))
        print(f"seeded {args.messages} parked messages in {time.perf_counter() - started:.1f} s")
        config = folder / "config.yaml"
        tree = {
            "aws": {"endpoint_url": url, "region": "us-east-1"},
            "defaults": {"policy": {"parking_queue": "parked"}},
            "queues": {"orders": {"name": "orders-dlq", "target": {"kind": "sqs", "queue": "out"}}},
        }
        config.write_text(yaml.safe_dump(tree))
        port = free_port()
        command = [sys.executable, "-m", "worker", "console", "--config", str(config)]
        command += ["--listen", f"127.0.0.1:{port}", "--backup-dir", str(folder)]
        console = subprocess.Popen(command, env=ENV, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                fetch(base + "/healthz")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        first, text = fetch(base + "/queues/orders")
        shown = re.search(r"(\d+) of ~(\d+) read so far", text)
        what = f"{shown.group(1)} of ~{shown.group(2)} read" if shown else "the whole snapshot"
        rows = text.count("/queues/orders/messages/")
        print(f"first page: {first:.2f} s ({rows} rows listed, {what}; target < 3 s)")
        began = time.perf_counter()
        while 'id="refresh"' not in text:
            time.sleep(0.25)
            _, text = fetch(base + "/queues/orders")
        whole = time.perf_counter() - began + first
        count = re.search(r"Snapshot of (\d+) parked messages", text)
        print(f"whole snapshot: {whole:.1f} s ({count.group(1) if count else '?'} messages)")
        filtered, text = fetch(
            base + "/queues/orders?match=%24.order.tier%3Dgold&reason=max_attempts"
        )
        matched = re.search(r"(\d+) matching messages", text)
        print(
            f"filtered page over it: {1000 * filtered:.0f} ms "
            f"({matched.group(1) if matched else '?'} match)"
        )
        print(f"console RSS after the snapshot: {rss_mb(console.pid):.0f} MB")
        console.terminate()
        console.wait(timeout=20)
        began = time.perf_counter()
        summary = subprocess.run(
            [
                sys.executable,
                "-m",
                "worker",
                "parked",
                "summary",
                "orders",
                "--config",
                str(config),
                "--json",
            ],
            env=ENV,
            capture_output=True,
            text=True,
            check=True,
        )
        total = json.loads(summary.stdout)["total"]
        print(
            "side by side, the command line's parked summary: "
            f"{time.perf_counter() - began:.1f} s ({total} messages)"
        )
    finally:
        emulator.terminate()
        emulator.wait(timeout=20)


if __name__ == "__main__":
    main()
