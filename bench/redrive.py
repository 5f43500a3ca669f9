"""`make bench`: redrive N messages SQS DLQ → SQS queue on the local emulator, retry-worker
against the PyPI tool sqs-mover, on the same emulator and the same data, in one run.

Prints messages/s, AWS API calls per message (counted by a proxy in front of the emulator)
and CPU ms per message (the tool's own process, from its rusage). The emulator runs in its
own process, so its CPU is not counted; its cost per call grows with queue depth, so read
wall time as relative between the two tools, not as an absolute.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml
from aiobotocore.session import get_session

from worker.emulator.proxy import FaultProxy

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("RETRY_WORKER_", "AWS_"))},
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class Result:
    tool: str
    messages: int
    wall: float
    cpu: float
    calls: int

    def row(self) -> str:
        return (
            f"{self.tool:<14} {self.messages:>8} {self.messages / self.wall:>10.1f} "
            f"{self.calls / self.messages:>10.3f} {1000 * self.cpu / self.messages:>10.3f}"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_emulator() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=1):  # noqa: S310 - loopback
                return process, url
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def attributes(i: int) -> dict[str, dict[str, object]]:
    return {
        "tenant": {"DataType": "String", "StringValue": f"t-{i % 7}"},
        "amount": {"DataType": "Number", "StringValue": str(i)},
        "sig": {"DataType": "Binary", "BinaryValue": i.to_bytes(4, "big")},
    }


async def seed(url: str, prefix: str, queues: int, per_queue: int) -> None:
    async with get_session().create_client("sqs", region_name="us-east-1", endpoint_url=url) as sqs:
        for q in range(queues):
            dlq = (await sqs.create_queue(QueueName=f"{prefix}-dlq-{q}"))["QueueUrl"]
            await sqs.create_queue(QueueName=f"{prefix}-out-{q}")
            for start in range(0, per_queue, 10):
                entries = [
                    {
                        "Id": str(i),
                        "MessageBody": f"{prefix} message {q}-{i}",
                        "MessageAttributes": attributes(i),
                    }
                    for i in range(start, min(start + 10, per_queue))
                ]
                await sqs.send_message_batch(QueueUrl=dlq, Entries=entries)
        await sqs.create_queue(QueueName="bench-parked")


async def delivered(url: str, prefix: str, queues: int) -> int:
    total = 0
    async with get_session().create_client("sqs", region_name="us-east-1", endpoint_url=url) as sqs:
        for q in range(queues):
            out = (await sqs.get_queue_url(QueueName=f"{prefix}-out-{q}"))["QueueUrl"]
            attrs = await sqs.get_queue_attributes(
                QueueUrl=out, AttributeNames=["ApproximateNumberOfMessages"]
            )
            total += int(attrs["Attributes"]["ApproximateNumberOfMessages"])
    return total


def wait_rusage(process: subprocess.Popen[bytes]) -> float:
    _, _, usage = os.wait4(process.pid, 0)
    process.returncode = 0
    return usage.ru_utime + usage.ru_stime


def worker_config(folder: Path, endpoint: str, prefix: str, queues: int) -> Path:
    config = {
        "aws": {"endpoint_url": endpoint},
        "logging": {"level": "WARNING"},
        "http": {"port": free_port()},
        # The default token bucket (10 msg/s per target) protects targets; a bulk redrive
        # into queues that take thousands per second lifts it, as an operator would.
        "defaults": {
            "policy": {"parking_queue": "bench-parked"},
            "rate_limit": {"per_second": 10_000, "burst": 1_000},
        },
        "queues": {
            f"q{q}": {
                "name": f"{prefix}-dlq-{q}",
                "target": {"kind": "sqs", "queue": f"{prefix}-out-{q}"},
            }
            for q in range(queues)
        },
    }
    path = folder / f"{prefix}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_worker(config: Path, folder: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "run", "--config", str(config)],
        env={**ENV, "RETRY_WORKER_CONFIG_DIR": str(folder)},
        stdout=subprocess.DEVNULL,
    )


def bench_worker(emulator: str, proxy: FaultProxy, folder: Path, queues: int, n: int) -> Result:
    # Baseline: start and stop with nothing to do, to separate start-up CPU from the work.
    asyncio.run(seed(emulator, "idle", queues, 0))
    idle = run_worker(worker_config(folder, proxy.url, "idle", queues), folder)
    time.sleep(3)
    idle.send_signal(signal.SIGTERM)
    baseline = wait_rusage(idle)

    asyncio.run(seed(emulator, "rw", queues, n // queues))
    proxy.clear()
    started = time.monotonic()
    process = run_worker(worker_config(folder, proxy.url, "rw", queues), folder)
    while asyncio.run(delivered(emulator, "rw", queues)) < n:
        time.sleep(0.2)
    wall = time.monotonic() - started
    calls = proxy.count()
    process.send_signal(signal.SIGTERM)
    cpu = wait_rusage(process)
    print(f"retry-worker: start-up and idle polling cost {baseline:.2f} s CPU (subtracted)")
    return Result("retry-worker", n, wall, max(0.0, cpu - baseline), calls)


def run_sqs_mover(proxy: FaultProxy, prefix: str, q: int) -> float:
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "sqsmover"),
            "-s",
            f"{prefix}-dlq-{q}",
            "-d",
            f"{prefix}-out-{q}",
        ],
        env={**ENV, "AWS_ENDPOINT_URL_SQS": proxy.url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return wait_rusage(process)


def bench_sqs_mover(emulator: str, proxy: FaultProxy, queues: int, n: int) -> Result:
    # Baseline: one run on an empty queue (interpreter and boto3 start-up), once per queue.
    asyncio.run(seed(emulator, "smidle", 1, 0))
    baseline = run_sqs_mover(proxy, "smidle", 0)
    asyncio.run(seed(emulator, "sm", queues, n // queues))
    proxy.clear()
    started = time.monotonic()
    cpu = sum(run_sqs_mover(proxy, "sm", q) for q in range(queues))
    wall = time.monotonic() - started
    moved = asyncio.run(delivered(emulator, "sm", queues))
    print(f"sqs-mover: start-up cost {baseline:.2f} s CPU per run (subtracted x{queues})")
    return Result("sqs-mover", moved, wall, max(0.0, cpu - queues * baseline), proxy.count())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--queues", type=int, default=4)
    args = parser.parse_args()
    os.environ.update(ENV)
    emulator, url = start_emulator()
    proxy = FaultProxy(url).start()
    proxy.keep_journal = False
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ours = bench_worker(url, proxy, Path(tmp), args.queues, args.messages)
        theirs = bench_sqs_mover(url, proxy, args.queues, args.messages)
    finally:
        if proxy.upstream_errors:
            dropped = proxy.upstream_errors
            print(f"the emulator dropped {len(dropped)} requests: {dropped[:5]}")
        proxy.stop()
        emulator.terminate()
        emulator.wait()
    print(f"\n{'tool':<14} {'messages':>8} {'msgs/s':>10} {'calls/msg':>10} {'cpu ms/msg':>10}")
    print(ours.row())
    print(theirs.row())
    calls = (ours.calls / ours.messages) / (theirs.calls / theirs.messages)
    cpu = (ours.cpu / ours.messages) / max(1e-9, theirs.cpu / theirs.messages)
    speed = (ours.messages / ours.wall) / (theirs.messages / theirs.wall)
    print(f"\nretry-worker / sqs-mover: calls {calls:.2f}x, CPU {cpu:.2f}x, speed {speed:.2f}x")


if __name__ == "__main__":
    main()
