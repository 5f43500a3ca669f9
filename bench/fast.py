"""`make bench` on a fast SQS-compatible server (npm `fauxqs`, installed by this bench from its
lock file and bound to 127.0.0.1). moto stays the correctness backend of the tests.

1. Throughput: N messages seeded into 4 DLQs while the tool runs, moved to 4 queues; retry-
   worker against the bare aiobotocore receive → send → delete loop (`bench/bare_loop.py`) on
   the same server, in one run: msg/s, requests per message, CPU ms per message (the tool's
   own process, from ready to done), peak RSS.
2. Many queues: daemons with N idle queues each (1,000 and 10,000 by default, side by side):
   time to ready, RSS, descriptors, idle CPU, billed requests per hour per queue (the daemon's
   own `retry_worker_aws_requests_total`), series and bytes of one scrape.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from aiobotocore.session import get_session
from prometheus_client.parser import text_string_to_metric_families

from bench.redrive import ENV, free_port
from worker.emulator.proxy import FaultProxy

HERE = Path(__file__).resolve().parent / "fauxqs"
TICKS = os.sysconf("SC_CLK_TCK")


def start_fauxqs(delay_ms: float = 0) -> tuple[subprocess.Popen[str], str]:
    """fauxqs on a free loopback port; `delay_ms` added to every request (serve.mjs)."""
    if not (HERE / "node_modules" / "fauxqs").exists():
        subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=HERE, check=True)
    process = subprocess.Popen(
        ["node", "serve.mjs", "0", str(delay_ms)], cwd=HERE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        raise SystemExit(f"fauxqs did not start: {url!r}")
    return process, url


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - loopback
            return response.status, response.read()
    except OSError:
        return 0, b""


def requests_made(port: int) -> float:
    _, body = get(f"http://127.0.0.1:{port}/metrics")
    total = 0.0
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "retry_worker_aws_requests":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


async def sqs_client(url: str):  # type: ignore[no-untyped-def]
    return get_session().create_client("sqs", region_name="us-east-1", endpoint_url=url)


async def create(url: str, names: list[str]) -> dict[str, str]:
    async with await sqs_client(url) as sqs:
        urls: dict[str, str] = {}
        for start in range(0, len(names), 200):
            chunk = names[start : start + 200]
            made = await asyncio.gather(*(sqs.create_queue(QueueName=n) for n in chunk))
            urls.update({n: m["QueueUrl"] for n, m in zip(chunk, made, strict=True)})
        return urls


async def seed(url: str, dlqs: list[str], total: int) -> None:
    attributes = {
        "tenant": {"DataType": "String", "StringValue": "acme"},
        "n": {"DataType": "Number", "StringValue": "7"},
    }
    async with await sqs_client(url) as sqs:

        async def fill(dlq: str, count: int) -> None:
            for start in range(0, count, 10):
                entries = [
                    {
                        "Id": str(i),
                        "MessageBody": f'{{"i": {start + i}}}',
                        "MessageAttributes": attributes,
                    }
                    for i in range(min(10, count - start))
                ]
                await sqs.send_message_batch(QueueUrl=dlq, Entries=entries)

        await asyncio.gather(*(fill(d, total // len(dlqs)) for d in dlqs))


async def moved(url: str, outs: list[str]) -> int:
    async with await sqs_client(url) as sqs:
        counts = await asyncio.gather(
            *(
                sqs.get_queue_attributes(QueueUrl=o, AttributeNames=["ApproximateNumberOfMessages"])
                for o in outs
            )
        )
        return sum(int(c["Attributes"]["ApproximateNumberOfMessages"]) for c in counts)


@dataclass
class Run:
    tool: str
    messages: int
    seconds: float
    cpu: float
    requests: float
    rss: float

    def row(self) -> str:
        return (
            f"{self.tool:<14} {self.messages:>8} {self.messages / self.seconds:>9.0f} "
            f"{self.requests / self.messages:>9.3f} {1000 * self.cpu / self.messages:>10.3f} "
            f"{self.rss:>8.0f}"
        )


def daemon_config(url: str, queues: dict[str, dict], port: int, tmp: str, **receive: float) -> Path:
    tree = {
        "aws": {"endpoint_url": url},
        "logging": {"format": "json", "level": "WARNING"},
        "http": {"host": "127.0.0.1", "port": port},
        "defaults": {
            "concurrency": 40,
            "receive": {"wait_seconds": 20, **receive},
            "policy": {"parking_queue": "parked"},
            "rate_limit": {"per_second": 100000, "burst": 10000},
        },
        "queues": queues,
    }
    path = Path(tmp) / f"config-{port}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def start_daemon(config: Path, tmp: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**ENV, "RETRY_WORKER_CONFIG_DIR": tmp},
    )


def wait_ready(port: int, process: subprocess.Popen[bytes], limit: float = 900) -> float:
    started = time.monotonic()
    while get(f"http://127.0.0.1:{port}/readyz")[0] != 200:
        if process.poll() is not None or time.monotonic() - started > limit:
            raise SystemExit("the daemon did not get ready")
        time.sleep(0.1)
    return time.monotonic() - started


async def throughput(
    url: str, tool: str, total: int, run_id: int, queue_extra: dict | None = None
) -> Run:
    """`queue_extra`: more keys for each of the daemon's queues (rules, a transform…)."""
    names = [f"t{run_id}-{i}" for i in range(4)]
    urls = await create(url, [f"{n}-dlq" for n in names] + [f"{n}-out" for n in names] + ["parked"])
    dlqs = [urls[f"{n}-dlq"] for n in names]
    outs = [urls[f"{n}-out"] for n in names]
    with tempfile.TemporaryDirectory() as tmp:
        if tool != "bare-aiobotocore":
            port = free_port()
            queues = {
                n: {
                    "url": urls[f"{n}-dlq"],
                    "target": {"kind": "sqs", "queue": urls[f"{n}-out"]},
                    **(queue_extra or {}),
                }
                for n in names
            }
            process = start_daemon(
                daemon_config(url, queues, port, tmp, idle_max_interval_seconds=0), tmp
            )
            wait_ready(port, process)
            before = requests_made(port)
        else:
            pairs = [f"{d}={o}" for d, o in zip(dlqs, outs, strict=True)]
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.bare_loop", url, str(total), *pairs],
                stdout=subprocess.PIPE,
                env=ENV,
            )
            assert process.stdout is not None
            process.stdout.readline()  # ready
        cpu0 = cpu_seconds(process.pid)
        started = time.monotonic()
        await seed(url, dlqs, total)
        while await moved(url, outs) < total:
            await asyncio.sleep(0.05)
        seconds = time.monotonic() - started
        cpu = cpu_seconds(process.pid) - cpu0
        rss = peak_rss_mb(process.pid)
        if tool != "bare-aiobotocore":
            requests = requests_made(port) - before
            process.terminate()
        else:
            out, _ = process.communicate(timeout=60)
            requests = float(out.split()[-1])
        process.wait(60)
    return Run(tool, total, seconds, cpu, requests, rss)


@dataclass
class Idle:
    queues: int
    ready: float
    rss: float
    fds: int
    cpu_percent: float
    per_hour: float
    series: int
    scrape_bytes: int


async def many_queues(url: str, sizes: list[int], window: float) -> list[Idle]:
    with tempfile.TemporaryDirectory() as tmp:
        daemons = []
        for size in sizes:
            names = [f"n{size}-{i:05d}" for i in range(size)]
            urls = await create(url, [f"{n}-dlq" for n in names] + ["parked", "out"])
            queues = {
                n: {"url": urls[f"{n}-dlq"], "target": {"kind": "sqs", "queue": "out"}}
                for n in names
            }
            port = free_port()
            process = start_daemon(daemon_config(url, queues, port, tmp), tmp)
            daemons.append((size, port, process))
        readiness = [wait_ready(port, process) for _, port, process in daemons]
        marks = [(requests_made(port), cpu_seconds(p.pid)) for _, port, p in daemons]
        started = time.monotonic()
        await asyncio.sleep(window)
        elapsed = time.monotonic() - started
        results = []
        for (size, port, process), ready, (requests0, cpu0) in zip(
            daemons, readiness, marks, strict=True
        ):
            _, body = get(f"http://127.0.0.1:{port}/metrics")
            series = sum(len(f.samples) for f in text_string_to_metric_families(body.decode()))
            results.append(
                Idle(
                    size,
                    ready,
                    rss_mb(process.pid),
                    len(os.listdir(f"/proc/{process.pid}/fd")),
                    100 * (cpu_seconds(process.pid) - cpu0) / elapsed,
                    (requests_made(port) - requests0) * 3600 / elapsed / size,
                    series,
                    len(body),
                )
            )
            process.terminate()
            process.wait(60)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--queues", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--window", type=float, default=630.0, help="idle seconds measured")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-idle", action="store_true")
    args = parser.parse_args()
    os.environ.update({k: v for k, v in ENV.items() if k.startswith("AWS_")})
    server, url = start_fauxqs()
    try:
        if not args.skip_throughput:
            print(f"throughput on fauxqs, {args.messages} messages, 4 DLQs -> 4 queues")
            head = f"{'tool':<14} {'messages':>8} {'msg/s':>9} {'req/msg':>9}"
            print(head + f" {'cpu ms/msg':>10} {'rss MB':>8}")
            runs = []
            for run_id, tool in enumerate(("bare-aiobotocore", "retry-worker")):
                runs.append(asyncio.run(throughput(url, tool, args.messages, run_id)))
                print(runs[-1].row(), flush=True)
            bare, ours = runs
            print(
                f"ratio: {ours.messages / ours.seconds / (bare.messages / bare.seconds):.2f}x "
                f"throughput, {ours.cpu / bare.cpu:.2f}x CPU per message"
            )
        if args.skip_idle:
            return
        print(
            f"\nidle queues on fauxqs, defaults (idle checks every <= 300 s), {args.window:.0f} s"
        )
        print(
            f"{'queues':>7} {'ready s':>8} {'rss MB':>7} {'fds':>6} {'cpu %':>6} "
            f"{'req/h/queue':>11} {'series':>7} {'scrape kB':>9}"
        )
        for r in asyncio.run(many_queues(url, args.queues, args.window)):
            print(
                f"{r.queues:>7} {r.ready:>8.1f} {r.rss:>7.0f} {r.fds:>6} {r.cpu_percent:>6.2f} "
                f"{r.per_hour:>11.1f} {r.series:>7} {r.scrape_bytes / 1024:>9.0f}",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()


@contextlib.contextmanager
def counted_fauxqs() -> Iterator[tuple[str, FaultProxy]]:
    """fauxqs with the request-counting proxy in front: (fauxqs's URL, the proxy); the AWS
    environment of the benchmarks set."""
    os.environ.update({k: v for k, v in ENV.items() if k.startswith("AWS_")})
    server, url = start_fauxqs()
    proxy = FaultProxy(url).start()
    proxy.keep_journal = False
    try:
        yield url, proxy
    finally:
        proxy.stop()
        server.terminate()
        server.wait(10)
