"""`make bench`: file descriptors the daemon holds with N idle queues, under the machine's
own open-files limit and under the common hard limit of 1,024.

Starts the emulator in its own process, creates N empty DLQs, runs `retry-worker run` against
them, waits until it is ready and its long polls are out, then counts `/proc/<pid>/fd` a few
times and reports the most it saw with the plan the daemon logged (pools, poll slots).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from aiobotocore.session import get_session

from bench.redrive import ENV, free_port, start_emulator

SETTLE_SECONDS = 25  # long polls (20 s) all out at least once


async def create_queues(url: str, count: int) -> None:
    session = get_session()
    async with session.create_client("sqs", region_name="us-east-1", endpoint_url=url) as sqs:
        await sqs.create_queue(QueueName="parked")
        await sqs.create_queue(QueueName="out")
        for start in range(0, count, 50):
            await asyncio.gather(
                *(
                    sqs.create_queue(QueueName=f"idle{i:05d}-dlq")
                    for i in range(start, min(count, start + 50))
                )
            )


def config(url: str, count: int, port: int) -> dict[str, object]:
    return {
        "aws": {"endpoint_url": url},
        "logging": {"format": "json"},
        "http": {"host": "127.0.0.1", "port": port},
        "metrics": {"queue_depth_interval_seconds": 0},
        "defaults": {"concurrency": 2, "policy": {"parking_queue": "parked"}},
        "queues": {
            f"idle{i:05d}": {"name": f"idle{i:05d}-dlq", "target": {"kind": "sqs", "queue": "out"}}
            for i in range(count)
        },
    }


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def measure(url: str, count: int, hard: int | None) -> dict[str, object]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config(url, count, port)))
        log = Path(tmp) / "daemon.log"

        def limit() -> None:
            if hard is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker", "run", "--config", str(path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**ENV, "RETRY_WORKER_CONFIG_DIR": tmp},
                preexec_fn=limit,
            )
            started = time.monotonic()
            try:
                while not ready(port):
                    if process.poll() is not None or time.monotonic() - started > 600:
                        raise SystemExit(log.read_text()[-2000:])
                    time.sleep(0.2)
                to_ready = time.monotonic() - started
                most = 0
                end = time.monotonic() + SETTLE_SECONDS
                while time.monotonic() < end:
                    most = max(most, len(os.listdir(f"/proc/{process.pid}/fd")))
                    time.sleep(0.5)
                alive = process.poll() is None
            finally:
                process.terminate()
                process.wait(30)
        lines = log.read_text().splitlines()
    plan = next(json.loads(x) for x in lines if "connections_planned" in x)
    turns = any("queues_take_turns" in x for x in lines)
    return {
        "queues": count,
        "limit": plan["open_files_limit"],
        "fds": most,
        "sqs_pool": plan["sqs_pool"],
        "poll_slots": plan["poll_slots"],
        "turns": turns,
        "ready_s": round(to_ready, 1),
        "alive": alive,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queues", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()
    os.environ.update({k: v for k, v in ENV.items() if k.startswith("AWS_")})
    emulator, url = start_emulator()
    try:
        asyncio.run(create_queues(url, max(args.queues)))
        print(f"{'queues':>7} {'limit':>8} {'fds':>6} {'pool':>6} {'slots':>6} turns ready_s")
        for count in args.queues:
            for hard in (None, 1024):
                r = measure(url, count, hard)
                print(
                    f"{r['queues']:>7} {r['limit']:>8} {r['fds']:>6} {r['sqs_pool']:>6} "
                    f"{r['poll_slots']:>6} {'yes' if r['turns'] else 'no':>5} {r['ready_s']:>7}"
                    + ("" if r["alive"] else "  DIED"),
                    flush=True,
                )
    finally:
        emulator.terminate()
        emulator.wait(10)


if __name__ == "__main__":
    main()
