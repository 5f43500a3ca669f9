"""The operator commands on the parking queue an incident leaves: a million parked messages in
`make bench` (100,000 by default here) on the fast server (npm `fauxqs`, `serve.mjs`, which
counts the requests).

`parked summary`, `parked export` (unless `--no-export`), `parked replay --to dlq` with a
filter matching half, then
`parked purge` of the rest: for each, the time, the command's peak RSS and the SQS requests per
message; then every message is checked to be in exactly one place (the DLQ or the backup).

    python -m bench.parked [--messages 100000] [--no-export]
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
from pathlib import Path

import yaml

from bench.console import park_many
from bench.fast import create, sqs_client, start_fauxqs
from bench.latency import server
from bench.redrive import ENV


async def seed(url: str, dlq: str, parking: str, messages: int) -> None:
    async with await sqs_client(url) as sqs:

        def body(i: int) -> str:
            return json.dumps({"n": i, "tier": ("gold", "std")[i % 2]})

        await park_many(sqs, dlq, parking, messages, body)


def run(config: Path, folder: Path, url: str, *args: str) -> tuple[float, float, int, str]:
    """One command: seconds, peak RSS MB (GNU time's %M), SQS requests (the server's count),
    stdout."""
    server(url, "/_bench/reset")
    command = ["/usr/bin/time", "-f", "peak-rss-kb %M", sys.executable, "-m", "worker", *args]
    command += ["--config", str(config)]
    started = time.perf_counter()
    done = subprocess.run(command, env=ENV, cwd=folder, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: exit {done.returncode}\n{done.stderr[-2000:]}")
    peak = next(x for x in reversed(done.stderr.splitlines()) if x.startswith("peak-rss-kb"))
    requests = server(url, "/_bench/stats")["requests"]
    return seconds, int(peak.split()[1]) / 1024, requests, done.stdout


async def count_dlq(url: str, dlq: str) -> list[int]:
    found: list[int] = []
    async with await sqs_client(url) as sqs:
        while True:
            got = await sqs.receive_message(
                QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=600
            )
            batch = got.get("Messages", [])
            if not batch:
                return found
            found += [json.loads(m["Body"])["n"] for m in batch]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--no-export", action="store_true", help="skip `parked export`")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-parked-"))
    os.environ.update({k: v for k, v in ENV.items() if k.startswith("AWS_")})
    fauxqs, url = start_fauxqs()
    try:
        urls = asyncio.run(create(url, ["orders-dlq", "parked", "out"]))
        started = time.perf_counter()
        asyncio.run(seed(url, urls["orders-dlq"], urls["parked"], args.messages))
        print(f"seeded {args.messages} parked messages in {time.perf_counter() - started:.0f} s")
        config = folder / "config.yaml"
        tree = {
            "aws": {"endpoint_url": url},
            "defaults": {"policy": {"parking_queue": urls["parked"]}},
            "queues": {
                "orders": {"url": urls["orders-dlq"], "target": {"kind": "sqs", "queue": "out"}}
            },
        }
        config.write_text(yaml.safe_dump(tree))
        rate = str(args.messages * 10)
        steps = [
            ("parked summary", ("parked", "summary", "orders", "--json")),
            ("parked export", ("parked", "export", "orders", "--out", "all.jsonl")),
            (
                "replay half",
                (
                    "parked",
                    "replay",
                    "orders",
                    "--match",
                    "$.tier=gold",
                    "--yes",
                    "--rate",
                    rate,
                    "--backup",
                    "replay.jsonl",
                ),
            ),
            (
                "purge the rest",
                ("parked", "purge", "orders", "--yes", "--rate", rate, "--backup", "purge.jsonl"),
            ),
        ]
        print(f"{'command':<16} {'seconds':>8} {'peak MB':>8} {'req/msg':>8}")
        for label, command in steps:
            if label == "parked export" and args.no_export:
                continue
            seconds, rss, requests, out = run(config, folder, url, *command)
            print(f"{label:<16} {seconds:>8.1f} {rss:>8.0f} {requests / args.messages:>8.3f}")
            if label == "parked summary":
                assert json.loads(out)["total"] == args.messages, out
        in_dlq = asyncio.run(count_dlq(url, urls["orders-dlq"]))
        purged = [
            json.loads(json.loads(line)["body"])["n"]
            for line in (folder / "purge.jsonl").read_text().splitlines()
        ]
        everywhere = sorted(in_dlq + purged)
        ok = everywhere == list(range(args.messages))
        print(
            f"in the DLQ {len(in_dlq)}, purged (backed up) {len(purged)}: "
            f"{'every message in exactly one place' if ok else 'MISMATCH'}"
        )
        if not ok:
            raise SystemExit(1)
    finally:
        fauxqs.terminate()
        fauxqs.wait(10)


if __name__ == "__main__":
    main()
