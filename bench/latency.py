"""`make bench`: one DLQ with a backlog, over a region's round trip.

fauxqs (`bench/fauxqs/serve.mjs`) answers every request after a fixed delay (15 ms by
default), so latency, not CPU, sets the pace of a queue. The DLQ is seeded before the tool
starts, every message delayed (DelaySeconds) so the whole backlog becomes visible at one
moment after the tool is ready; from that moment to the last message moved the bench counts
the tool's CPU (its own process), the server counts requests and how many were in flight at
once. Side by side in one run:

- the bare aiobotocore receive → send → delete loop with `--tasks` tasks on the DLQ (each has
  one request in flight: as many receives in flight as the daemon may have), and
- retry-worker with `concurrency` = tasks x 9 and a bucket that is not the limit. Its
  deletes overlap its next receives, so at tasks x 10 it keeps more requests in flight than
  the loop (9.7 against 8.3 on average, measured), at tasks x 8 fewer (7.9 against 8.4); at
  tasks x 9 about the same. The mean and peak columns show it for every run.

Five rounds, each tool in turn; the ratios are the medians of the rounds (CPU per message
varies by ±20 % from one run to the next on this machine, the bare loop's as much as ours).

Then every message is checked: each moved exactly once (bodies are numbered), none left.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench import fast
from bench.fast import (
    cpu_seconds,
    create,
    daemon_config,
    peak_rss_mb,
    sqs_client,
    start_daemon,
    start_fauxqs,
    wait_ready,
)
from bench.redrive import ENV, free_port

VISIBLE_AFTER = 6  # seconds from the end of seeding: both tools are ready well before


def server(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=10) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def counts(url: str) -> dict[str, int]:
    return {q["name"]: q["approximateMessageCount"] for q in server(url, "/_fauxqs/queues")}


async def seed(url: str, dlq: str, total: int) -> float:
    """The backlog, numbered bodies, visible VISIBLE_AFTER s from the end (monotonic time)."""
    async with await sqs_client(url) as sqs:
        # The latest visible moment of any message: DelaySeconds counts from each send.
        started = time.monotonic()

        async def send(start: int) -> None:
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": json.dumps({"n": start + i}),
                    "DelaySeconds": VISIBLE_AFTER,
                }
                for i in range(min(10, total - start))
            ]
            await sqs.send_message_batch(QueueUrl=dlq, Entries=entries)

        for chunk in range(0, total, 1000):
            await asyncio.gather(*(send(s) for s in range(chunk, min(total, chunk + 1000), 10)))
        print(f"  seeded in {time.monotonic() - started:.2f} s", flush=True)
        return started + VISIBLE_AFTER


def check(url: str, dlq: str, out: str, total: int) -> tuple[int, int, int]:
    """(moved once, moved more than once, left in the DLQ), from the server's own inspection
    of both queues (not through the API: no request is counted, none delayed)."""
    seen: dict[int, int] = {}
    held = server(url, f"/_fauxqs/queues/{out}")["messages"]
    for m in held["ready"] + held["delayed"] + [e["message"] for e in held["inflight"]]:
        n = json.loads(m["body"])["n"]
        seen[n] = seen.get(n, 0) + 1
    left = server(url, f"/_fauxqs/queues/{dlq}")["messages"]
    once = sum(1 for n in range(total) if seen.get(n) == 1)
    twice = sum(c - 1 for c in seen.values() if c > 1)
    return once, twice, len(left["ready"]) + len(left["delayed"]) + len(left["inflight"])


@dataclass
class Run(fast.Run):
    """A run of `bench.fast` plus what the server saw in flight and what the check found."""

    peak: int = 0
    mean: float = 0.0
    once: int = 0
    duplicates: int = 0
    left: int = 0

    def row(self) -> str:
        return (
            f"{self.tool:<17} {self.messages:>6} {self.messages / self.seconds:>7.0f} "
            f"{self.requests / self.messages:>7.3f} {1000 * self.cpu / self.messages:>10.3f} "
            f"{self.mean:>6.1f} {self.peak:>5} {self.rss:>6.0f} {self.messages - self.once:>5} "
            f"{self.duplicates:>5}"
        )


async def one(url: str, tool: str, total: int, tasks: int, concurrency: int, run_id: int) -> Run:
    dlq_name, out_name = f"lat{run_id}-dlq", f"lat{run_id}-out"
    urls = await create(url, [dlq_name, out_name, "parked"])
    dlq, out = urls[dlq_name], urls[out_name]
    visible_at = await seed(url, dlq, total)
    with tempfile.TemporaryDirectory() as tmp:
        if tool.startswith("retry-worker"):
            port = free_port()
            queues = {
                "backlog": {
                    "url": dlq,
                    "target": {"kind": "sqs", "queue": out},
                    "concurrency": concurrency,
                }
            }
            config = daemon_config(url, queues, port, tmp, idle_max_interval_seconds=0)
            if tool.endswith("+notify"):
                with_notify(config, tmp)
            process = start_daemon(config, tmp)
            wait_ready(port, process)
        else:
            process = start_bare(url, total, dlq, out, tasks)
        if time.monotonic() > visible_at - 1:
            raise SystemExit(f"{tool} was not ready before the backlog became visible")
        await asyncio.sleep(visible_at - time.monotonic())
        server(url, "/_bench/reset")
        cpu0 = cpu_seconds(process.pid)
        started = time.monotonic()
        while counts(url).get(out_name, 0) < total:
            await asyncio.sleep(0.02)
        seconds = time.monotonic() - started
        cpu = cpu_seconds(process.pid) - cpu0
        stats = server(url, "/_bench/stats")
        requests = ", ".join(f"{k} {v}" for k, v in sorted(stats["operations"].items()))
        print(f"  {tool}: {requests}", flush=True)
        rss = peak_rss_mb(process.pid)
        if tool.startswith("retry-worker"):
            process.terminate()
        process.wait(60)
    once, duplicates, left = check(url, dlq_name, out_name, total)
    return Run(
        tool,
        total,
        seconds,
        cpu,
        stats["requests"],
        rss,
        peak=stats["peak"],
        mean=stats["mean"],
        once=once,
        duplicates=duplicates,
        left=left,
    )


def with_notify(config: Path, tmp: str) -> None:
    """Notifications on (`--notify`): every new message counted for `arrived` (quiet 0: the
    backlog is an arrival), its digest to a webhook on a loopback port nobody listens on."""
    tree = yaml.safe_load(config.read_text())
    url_file = Path(tmp) / "webhook-url"
    url_file.write_text(f"http://127.0.0.1:{free_port()}/hook")
    tree["notify"] = {
        "events": ["parked", "arrived"],
        "quiet_seconds": 0,
        "window_seconds": 1,
        "sinks": [{"webhook": {"url_file": str(url_file)}}],
    }
    config.write_text(yaml.safe_dump(tree))


def start_bare(url: str, total: int, dlq: str, out: str, tasks: int) -> subprocess.Popen[bytes]:
    tasked = ("--tasks", str(tasks))
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_loop", url, str(total), f"{dlq}={out}", *tasked],
        stdout=subprocess.PIPE,
        env=ENV,
    )
    assert process.stdout is not None
    process.stdout.readline()  # ready
    return process


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=8000)
    parser.add_argument("--delay-ms", type=float, default=15)
    parser.add_argument("--tasks", type=int, default=10, help="bare loop tasks")
    parser.add_argument("--concurrency", type=int, default=0, help="daemon (0: tasks x 9)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--notify", action="store_true", help="also the daemon with notifications on"
    )
    args = parser.parse_args()
    tools = ("bare-aiobotocore", "retry-worker", *(("retry-worker+notify",) if args.notify else ()))
    os.environ.update({k: v for k, v in ENV.items() if k.startswith("AWS_")})
    fauxqs, url = start_fauxqs(args.delay_ms)
    try:
        print(
            f"one DLQ, {args.messages} messages backlog, {args.delay_ms:g} ms per request, "
            f"{args.tasks} bare tasks / concurrency {args.concurrency or args.tasks * 9}"
        )
        print(
            f"{'tool':<17} {'msgs':>6} {'msg/s':>7} {'req/msg':>7} {'cpu ms/msg':>10} "
            f"{'mean':>6} {'peak':>5} {'rss MB':>6} {'lost':>5} {'dup':>5}"
        )
        runs: list[Run] = []
        for _ in range(args.rounds):
            for tool in tools:
                concurrency = args.concurrency or args.tasks * 9
                run = await one(url, tool, args.messages, args.tasks, concurrency, len(runs))
                runs.append(run)
                print(run.row(), flush=True)
        speeds, cpus = [], []
        step = len(tools)
        for bare, ours in zip(runs[::step], runs[1::step], strict=True):
            speeds.append(ours.messages / ours.seconds / (bare.messages / bare.seconds))
            cpus.append((ours.cpu / ours.messages) / (bare.cpu / bare.messages))
        print(
            f"ratio (median of {len(speeds)} rounds): {statistics.median(speeds):.2f}x msg/s "
            f"(target >= 0.9x), {statistics.median(cpus):.2f}x CPU per message (target <= 1.15x)"
        )
        print(
            "  by round: "
            + ", ".join(f"{s:.2f}x/{c:.2f}x" for s, c in zip(speeds, cpus, strict=True))
        )
        if args.notify:
            plain, told = runs[1::step], runs[2::step]
            cost = [
                (t.cpu / t.messages) / (p.cpu / p.messages)
                for p, t in zip(plain, told, strict=True)
            ]
            pace = [
                (t.messages / t.seconds) / (p.messages / p.seconds)
                for p, t in zip(plain, told, strict=True)
            ]
            print(
                f"notifications on, against off (median): {statistics.median(pace):.2f}x msg/s, "
                f"{statistics.median(cost):.2f}x CPU per message"
            )
        print("mean/peak: requests in flight at the server during the drain")
        broken = [r for r in runs if r.once != r.messages or r.duplicates or r.left]
        if broken:
            raise SystemExit(f"messages lost or moved twice: {broken}")
    finally:
        fauxqs.terminate()


if __name__ == "__main__":
    asyncio.run(main())
