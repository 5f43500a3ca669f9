"""The descriptor budget, as a process: more queues than the open-files limit allows
connections for. The daemon stays up through health probes, serves every queue (they take
turns) and stops cleanly."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time

import anyio
import pytest
import yaml

from tests.helpers import depth, drain, free_port, wait_for
from tests.test_http import aget
from worker.emulator import create_queue

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
QUEUES = 150
HARD_LIMIT = 128


def _limit_open_files() -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, HARD_LIMIT))


async def test_more_queues_than_descriptors_take_turns_and_all_are_served(aws, proxy, tmp_path):
    out = await create_queue(aws.sqs, "out")
    await create_queue(aws.sqs, "parked")
    names = [f"q{i:03d}" for i in range(QUEUES)]
    for name in names:
        url = await create_queue(aws.sqs, f"{name}-dlq")
        await aws.sqs.send_message(QueueUrl=url, MessageBody=name)
    port = free_port()
    config = {
        "aws": {"endpoint_url": proxy.url, "read_timeout_seconds": 10},
        "logging": {"format": "json"},
        "http": {"host": "127.0.0.1", "port": port},
        "metrics": {"queue_depth_interval_seconds": 0},
        "defaults": {
            "concurrency": 1,
            "receive": {"batch_size": 1, "wait_seconds": 1},
            "policy": {"parking_queue": "parked"},
            "rate_limit": {"per_second": 1000, "burst": 1000},
        },
        "queues": {
            name: {"name": f"{name}-dlq", "target": {"kind": "sqs", "queue": "out"}}
            for name in names
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRY_WORKER_")}
    env["RETRY_WORKER_CONFIG_DIR"] = str(tmp_path)
    log_path = tmp_path / "daemon.log"
    base = f"http://127.0.0.1:{port}"
    probes: list[int] = []

    async def probe() -> bool:
        assert process.poll() is None, log_path.read_text()[-3000:]
        try:
            status = (await aget(base + "/livez"))[0]
        except OSError:
            return False  # not listening yet
        probes.append(status)
        probes.append((await aget(base + "/readyz"))[0])
        return True

    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "run", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_limit_open_files,
        )
        try:
            await wait_for(probe, timeout=60)

            async def all_delivered() -> bool:
                await probe()
                return await depth(aws.sqs, out) == QUEUES

            await wait_for(all_delivered, timeout=240, interval=0.5)
            await wait_for(lambda: _status(base + "/readyz", 200), timeout=60)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(lambda: process.wait(timeout=30))
        finally:
            process.kill()
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    assert time.monotonic() - started < 30
    assert '"event": "queues_take_turns"' in output
    assert "out of system resource" not in output, "the pools stayed within the budget"
    assert all(status in (200, 503) for status in probes)
    assert len(probes) > 4
    [plan] = [json.loads(line) for line in output.splitlines() if "connections_planned" in line]
    assert plan["open_files_limit"] == HARD_LIMIT  # the soft limit was raised
    assert plan["poll_slots"] < QUEUES
    assert sorted(m["Body"] for m in await drain(aws.sqs, out)) == names


async def _status(url: str, expected: int) -> bool:
    return (await aget(url))[0] == expected


def test_plan_fits_the_budget_and_polls_every_queue_when_it_can():
    from worker.aws.descriptors import RESERVE, plan_connections

    roomy = plan_connections(
        limit=65536, in_use=10, queues=100, deliveries=1000, services={"sqs"}, wanted_floor=64
    )
    assert roomy.poll_slots >= 100  # no turns
    tight = plan_connections(
        limit=1024,
        in_use=10,
        queues=1000,
        deliveries=10000,
        services={"sqs", "lambda", "stepfunctions"},
        wanted_floor=64,
    )
    assert tight.used() <= 1024 - 10 - RESERVE
    assert tight.poll_slots < tight.sqs_pool  # room is kept for settling
    assert set(tight.target_pools) == {"lambda", "stepfunctions"}
    demo = plan_connections(
        limit=1024,
        in_use=10,
        queues=1000,
        deliveries=100,
        services={"sqs"},
        wanted_floor=64,
        cost=4,
    )
    assert demo.used() * 4 <= 1024 - 10 - RESERVE
