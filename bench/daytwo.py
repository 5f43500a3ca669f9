"""`make bench`: the day-2 loop at a region's latency, side by side with the bare loop.

fauxqs (`bench/fauxqs/serve.mjs`) answers every request after 15 ms. Each round parks 10,000
messages and runs, each as a process timed from start to exit (startup included):

- the bare aiobotocore loop of 10 tasks (receive 10, SendMessageBatch, DeleteMessageBatch)
  moving 10,000 messages of a copy of the parking queue to another queue — the floor;
- `parked summary`, `parked export`, `parked replay --to dlq --yes --rate <not the limit>`
  and, after the parking queue is seeded again, `parked purge --yes`.

msg/s of each, its ratio to the bare loop's in the same round, the server's requests per
message and the command's peak RSS; the median ratio over the rounds. Every message is checked
afterwards: the replay left all in the DLQ, the purge's backup holds all, the queues empty.

    python -m bench.daytwo [--messages 10000] [--delay-ms 15] [--rounds 3]
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
from pathlib import Path

import yaml

from bench.console import park_many
from bench.fast import create, sqs_client, start_fauxqs
from bench.latency import counts, server
from bench.redrive import ENV

RATE = "1000000"  # not the limit
ROOT = Path(__file__).resolve().parent.parent


async def park(url: str, dlq: str, parking: str, messages: int) -> None:
    async with await sqs_client(url) as sqs:
        await park_many(sqs, dlq, parking, messages, lambda i: json.dumps({"n": i}))


def timed(command: list[str], folder: Path) -> tuple[float, float, str]:
    """(seconds, peak RSS MB, stdout) of one process."""
    command = ["/usr/bin/time", "-f", "peak-rss-kb %M", *command]
    started = time.perf_counter()
    env = {**ENV, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, cwd=folder, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)}: exit {done.returncode}\n{done.stderr[-2000:]}")
    peak = next(x for x in reversed(done.stderr.splitlines()) if x.startswith("peak-rss-kb"))
    return seconds, int(peak.split()[1]) / 1024, done.stdout


def one_round(
    url: str, folder: Path, n: int, messages: int
) -> list[tuple[str, float, float, float]]:
    """(label, msg/s, requests a message, peak MB) of each tool."""
    names = [f"r{n}-dlq", f"r{n}-parked", f"r{n}-copy", f"r{n}-out"]
    urls = asyncio.run(create(url, names))
    dlq, parking, copy, out = (urls[x] for x in names)
    asyncio.run(park(url, dlq, parking, messages))
    asyncio.run(park(url, dlq, copy, messages))
    config = folder / f"config-{n}.yaml"
    tree = {
        "aws": {"endpoint_url": url},
        "defaults": {"policy": {"parking_queue": parking}},
        "queues": {"orders": {"url": dlq, "target": {"kind": "sqs", "queue": out}}},
    }
    config.write_text(yaml.safe_dump(tree))
    worker = [sys.executable, "-m", "worker"]
    steps = [
        ("bare 10-task loop", [sys.executable, "-m", "bench.bare_loop", url, str(messages)]),
        ("parked summary", [*worker, "parked", "summary", "orders", "--json"]),
        ("parked export", [*worker, "parked", "export", "orders", "--out", f"export-{n}.jsonl"]),
        (
            "replay --to dlq",
            [
                *worker,
                "parked",
                "replay",
                "orders",
                "--yes",
                "--rate",
                RATE,
                "--backup",
                f"replay-{n}.jsonl",
            ],
        ),
        (
            "parked purge",
            [
                *worker,
                "parked",
                "purge",
                "orders",
                "--yes",
                "--rate",
                RATE,
                "--backup",
                f"purge-{n}.jsonl",
            ],
        ),
    ]
    steps[0][1].extend([f"{copy}={out}", "--tasks", "10"])
    rows = []
    for label, command in steps:
        if label == "parked purge":
            asyncio.run(park(url, dlq, parking, messages))
        if label.startswith("parked") or label.startswith("replay"):
            command = [*command, "--config", str(config)]
        server(url, "/_bench/reset")
        seconds, rss, stdout = timed(command, folder)
        stats = server(url, "/_bench/stats")
        rows.append((label, messages / seconds, stats["requests"] / messages, rss))
        if label == "parked summary":
            assert json.loads(stdout)["total"] == messages, stdout
    left = counts(url)
    moved = {name: left.get(name, 0) for name in names}
    purged = len((folder / f"purge-{n}.jsonl").read_text().splitlines())
    ok = moved == {names[0]: messages, names[1]: 0, names[2]: 0, names[3]: messages}
    print(f"  round {n}: queues {moved}, purged (backed up) {purged}", flush=True)
    if not ok or purged != messages:
        raise SystemExit("MISMATCH: a message is not in exactly one place")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--delay-ms", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.update({k: v for k, v in ENV.items() if k.startswith("AWS_")})
    fauxqs, url = start_fauxqs(args.delay_ms)
    ratios: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-daytwo-") as tmp:
            print(f"{args.messages} parked messages, {args.delay_ms:g} ms per request")
            print(f"{'tool':<20} {'msg/s':>7} {'x bare':>7} {'req/msg':>8} {'peak MB':>8}")
            for n in range(args.rounds):
                rows = one_round(url, Path(tmp), n, args.messages)
                bare = rows[0][1]
                for label, rate, requests, rss in rows:
                    ratios.setdefault(label, []).append(rate / bare)
                    ratio = rate / bare
                    print(f"{label:<20} {rate:>7.0f} {ratio:>6.2f}x {requests:>8.3f} {rss:>8.0f}")
        print("median of the rounds (goal: summary and replay >= 0.8x the bare loop):")
        for label, values in list(ratios.items())[1:]:
            by_round = ", ".join(f"{v:.2f}" for v in values)
            print(f"  {label:<18} {statistics.median(values):.2f}x  ({by_round})")
    finally:
        fauxqs.terminate()
        fauxqs.wait(10)


if __name__ == "__main__":
    main()
