"""What one idle check costs (issue 20): the daemon's CPU per GetQueueAttributes of an idle
DLQ against a bare aiobotocore loop making the same calls at the same pace, on the same fast
server (npm `fauxqs`), side by side in one run.

N idle queues with a short idle ceiling (so a minute holds thousands of checks); after a
warm-up both processes are measured over the same window: CPU seconds / calls. The bare
process then makes 3,000 calls back to back in one task: the call's own floor (no timers).

    python -m bench.idle [--queues 1000] [--ceiling 5] [--window 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time

from bench.fast import (
    cpu_seconds,
    create,
    daemon_config,
    free_port,
    requests_made,
    sqs_client,
    start_daemon,
    start_fauxqs,
    wait_ready,
)
from bench.redrive import ENV

SEQUENTIAL = 3000
ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


async def bare(url: str, urls: list[str], ceiling: float, warmup: float, window: float) -> None:
    """Each queue checked every `ceiling` seconds, spread over the first interval; prints
    calls and CPU seconds over the window."""
    calls = 0
    async with await sqs_client(url) as sqs:

        async def check(queue: str, phase: float) -> None:
            nonlocal calls
            await asyncio.sleep(phase)
            while True:
                await sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=ATTRIBUTES)
                calls += 1
                await asyncio.sleep(ceiling)

        tasks = [asyncio.create_task(check(q, ceiling * i / len(urls))) for i, q in enumerate(urls)]
        await asyncio.sleep(warmup)
        calls0, cpu0 = calls, _own_cpu()
        await asyncio.sleep(window)
        paced = f"{calls - calls0} {_own_cpu() - cpu0}"
        for task in tasks:
            task.cancel()
        # the call alone: one task, back to back (no timers, no other tasks)
        cpu0 = _own_cpu()
        for i in range(SEQUENTIAL):
            await sqs.get_queue_attributes(QueueUrl=urls[i % len(urls)], AttributeNames=ATTRIBUTES)
        print(f"{paced} {SEQUENTIAL} {_own_cpu() - cpu0}", flush=True)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queues", type=int, default=1000)
    parser.add_argument("--ceiling", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--bare", nargs=2, metavar=("URL", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.update({k: v for k, v in ENV.items() if k.startswith("AWS_")})
    warmup = 2 * args.ceiling + 5
    if args.bare:
        url, listing = args.bare
        with open(listing) as lines:
            urls = lines.read().split()
        asyncio.run(bare(url, urls, args.ceiling, warmup, args.window))
        return
    server, url = start_fauxqs()
    try:
        names = [f"idle-{i:05d}" for i in range(args.queues)]
        urls = asyncio.run(create(url, [f"{n}-dlq" for n in names] + ["parked", "out"]))
        queues = {
            n: {"url": urls[f"{n}-dlq"], "target": {"kind": "sqs", "queue": "out"}} for n in names
        }
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            config = daemon_config(url, queues, port, tmp, idle_max_interval_seconds=args.ceiling)
            daemon = start_daemon(config, tmp)
            wait_ready(port, daemon)
            command = [sys.executable, "-m", "bench.idle", "--queues", str(args.queues)]
            command += ["--ceiling", str(args.ceiling), "--window", str(args.window)]
            listing = os.path.join(tmp, "queues.txt")
            with open(listing, "w") as out:
                out.write("\n".join(urls[f"{n}-dlq"] for n in names))
            command += ["--bare", url, listing]
            loop = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=ENV)
            time.sleep(warmup)  # both warm: every queue idle at the ceiling
            requests0, cpu0 = requests_made(port), cpu_seconds(daemon.pid)
            time.sleep(args.window)
            ours_cpu = cpu_seconds(daemon.pid) - cpu0  # before the scrape below, which costs
            ours_calls = requests_made(port) - requests0
            assert loop.stdout is not None
            bare_calls, bare_cpu, alone_calls, alone_cpu = (
                float(x) for x in loop.stdout.readline().split()
            )
            loop.wait(30)
            daemon.terminate()
            daemon.wait(60)
        print(
            f"idle checks on fauxqs: {args.queues} queues, every {args.ceiling:g} s, "
            f"{args.window:g} s window"
        )
        print(f"{'tool':<16} {'calls':>8} {'cpu s':>7} {'cpu ms/check':>13}")
        for tool, calls, cpu in (
            ("bare-aiobotocore", bare_calls, bare_cpu),
            ("retry-worker", ours_calls, ours_cpu),
            ("bare, in a row", alone_calls, alone_cpu),
        ):
            print(f"{tool:<16} {calls:>8.0f} {cpu:>7.2f} {1000 * cpu / calls:>13.3f}")
        ratio = (ours_cpu / ours_calls) / (bare_cpu / bare_calls)
        print(f"ratio: {ratio:.2f}x CPU per idle check against the paced loop (target <= 1.3x)")
        alone = (ours_cpu / ours_calls) / (alone_cpu / alone_calls)
        print(f"       {alone:.2f}x against the bare call made back to back (no timers)")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
