"""The daemon as a process: SIGTERM drains within the grace period and loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
import yaml

from tests.helpers import depth, drain, wait_for
from worker.emulator import create_function, create_queue
from worker.emulator.proxy import Rule

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
SEEDED = 30


def _config(tmp_path: Path, endpoint: str, grace: float, http_port: int = 0) -> Path:
    config = {
        "aws": {"endpoint_url": endpoint, "read_timeout_seconds": 10},
        "logging": {"format": "json"},
        "http": {"host": "127.0.0.1", "port": http_port},
        "shutdown": {"grace_seconds": grace},
        "defaults": {
            "concurrency": 5,
            "receive": {"wait_seconds": 1, "visibility_timeout_seconds": 60},
            "policy": {"parking_queue": "parked", "backoff": {"initial_seconds": 1}},
        },
        "queues": {"slow": {"name": "slow-dlq", "target": {"kind": "lambda", "function": "slow"}}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _start(tmp_path: Path, config: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRY_WORKER_")}
    env["RETRY_WORKER_CONFIG_DIR"] = str(tmp_path)  # no base.yaml there: only --config
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


async def _seed(aws) -> tuple[str, str]:
    await create_function(aws.lambda_, "slow")
    dlq = await create_queue(aws.sqs, "slow-dlq")
    parked = await create_queue(aws.sqs, "parked")
    for start in range(0, SEEDED, 10):
        entries = [
            {"Id": str(i), "MessageBody": json.dumps({"n": i})} for i in range(start, start + 10)
        ]
        await aws.sqs.send_message_batch(QueueUrl=dlq, Entries=entries)
    return dlq, parked


async def _accounted(
    aws, proxy, dlq: str, parked: str, in_flight: int = 0
) -> tuple[set[int], set[int], set[int]]:
    """What is left in the DLQ (visible), parked and invoked. In flight counts too: a delivered
    message whose delete was lost hides there, and a visible-only count would miss it."""
    left = await depth(aws.sqs, dlq)
    remaining = {json.loads(m["Body"])["n"] for m in await drain(aws.sqs, dlq)}
    assert left - len(remaining) == in_flight, f"{left - len(remaining)} in flight in the DLQ"
    parked_ns = {json.loads(m["Body"])["n"] for m in await drain(aws.sqs, parked)}
    invoked = {body["n"] for body in proxy.requests("lambda", "Invoke")}
    return remaining, parked_ns, invoked


def _read_until(process: subprocess.Popen[str], marker: str) -> str:
    """Read the daemon's output until a line contains `marker` (signals are not queued:
    a second one sent before the first was handled would merge with it)."""
    assert process.stdout is not None
    lines = []
    while marker not in (line := process.stdout.readline()):
        assert line, "the daemon exited before " + marker
        lines.append(line)
    return "".join([*lines, line])


async def _stop(process: subprocess.Popen[str], timeout: float) -> tuple[int, str, float]:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output, time.monotonic() - started


async def _sigterm_during_slow_deliveries(
    aws, proxy, tmp_path: Path, *, delay: float, grace: float, invokes: int
) -> tuple[str, str, int, str, float]:
    """Seed, start the daemon against a target that takes `delay` s, SIGTERM it once
    `invokes` deliveries are under way; returns the queues and how the process ended."""
    dlq, parked = await _seed(aws)
    proxy.add(Rule("lambda", "Invoke", "delay", seconds=delay))
    process = _start(tmp_path, _config(tmp_path, proxy.url, grace=grace))
    try:
        await wait_for(lambda: proxy.count("lambda", "Invoke") >= invokes, timeout=30)
        code, output, took = await _stop(process, timeout=30)
    finally:
        process.kill()
    return dlq, parked, code, output, took


async def test_sigterm_mid_run_drains_and_loses_nothing(aws, proxy, tmp_path):
    dlq, parked, code, output, took = await _sigterm_during_slow_deliveries(
        aws, proxy, tmp_path, delay=1.0, grace=15, invokes=3
    )

    assert code == 0, output
    assert took < 15
    assert '"event": "shutdown_drained"' in output
    remaining, parked_ns, invoked = await _accounted(aws, proxy, dlq, parked)
    assert remaining | parked_ns | invoked == set(range(SEEDED)), "every message accounted for"
    assert not parked_ns
    assert invoked, "some were delivered before the stop"
    # what was delivered was deleted: nothing invoked is still in the DLQ
    assert not (invoked & remaining)


async def test_grace_expiry_releases_in_flight_messages_at_once(aws, proxy, tmp_path):
    dlq, parked, code, output, took = await _sigterm_during_slow_deliveries(
        aws, proxy, tmp_path, delay=8.0, grace=1, invokes=5
    )

    assert code == 0, output
    assert took < 8, "did not wait for the slow target"
    assert '"event": "shutdown_grace_expired"' in output
    remaining, parked_ns, _ = await _accounted(aws, proxy, dlq, parked)
    # released with visibility 0: every message is visible in the DLQ again right away
    assert remaining == set(range(SEEDED))
    assert not parked_ns


async def test_second_signal_exits_at_once_and_messages_reappear(aws, proxy, tmp_path):
    dlq, parked = await _seed(aws)
    proxy.add(Rule("lambda", "Invoke", "delay", seconds=8.0))
    process = _start(tmp_path, _config(tmp_path, proxy.url, grace=20))
    try:
        await wait_for(lambda: proxy.count("lambda", "Invoke") >= 5, timeout=30)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            seen = await anyio.to_thread.run_sync(_read_until, process, "shutdown_started")
        code, output, took = await _stop(process, timeout=10)
        output = seen + output
    finally:
        process.kill()

    assert code == 1, output
    assert took < 5, "the second signal does not wait for the grace period"
    assert '"action": "exit"' in output
    # the five in delivery are invisible until their lease ends; the rest wait in the DLQ
    remaining, parked_ns, _ = await _accounted(aws, proxy, dlq, parked, in_flight=5)
    assert len(remaining) == SEEDED - 5
    assert not parked_ns
