"""Running several daemons as processes against one emulator (the fleet tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_RECEIVE
from tests.helpers import free_port, wait_for
from tests.test_http import aget

ROOT = Path(__file__).resolve().parents[1]
TABLE = "coordination"
HEARTBEAT = 1.0


def fleet_config(endpoint: str, backend: str, queues: dict[str, Any], **defaults: Any) -> dict:
    coordination: dict[str, Any] = {"backend": backend}
    if backend == "dynamodb":
        coordination |= {"table": TABLE, "heartbeat_seconds": HEARTBEAT}
    return {
        "aws": {"endpoint_url": endpoint, "read_timeout_seconds": 10},
        "logging": {"format": "json"},
        "metrics": {"queue_depth_interval_seconds": 0},
        "shutdown": {"grace_seconds": 5},
        # Off unless a test is about it (tests/test_keeper.py): a pass holds parked messages
        # for a moment, at a time of its own, under tests that count them.
        "keeper": {"enabled": False},
        "coordination": coordination,
        "defaults": {
            "concurrency": 10,
            "receive": TEST_RECEIVE,
            "policy": {
                "parking_queue": "parked",
                "backoff": {"initial_seconds": 1, "max_seconds": 2, "jitter": "none"},
            },
            **defaults,
        },
        "queues": queues,
    }


class Daemon:
    """One replica: its own config file, HTTP port and log file."""

    def __init__(self, tmp_path: Path, index: int, config: dict[str, Any]) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = tmp_path / f"daemon-{index}.log"
        self.config_path = tmp_path / f"daemon-{index}.yaml"
        tree = {**config, "http": {"host": "127.0.0.1", "port": self.port}}
        self.config_path.write_text(yaml.safe_dump(tree))
        self._tmp = tmp_path
        self.key = f"replica{index}"  # its AWS access key: the proxy tells replicas apart by it
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RETRY_WORKER_")}
        env["RETRY_WORKER_CONFIG_DIR"] = str(self._tmp)  # no base.yaml there
        env["AWS_ACCESS_KEY_ID"] = self.key
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                # the daemon with its requests stamped with when they left (tests/stamped.py)
                [sys.executable, "-m", "tests.stamped", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,  # where `tests` is a package
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text()

    def events(self, name: str) -> list[dict[str, Any]]:
        """The replica's JSON log lines for event `name`, in order."""
        lines = (json.loads(line) for line in self.log().splitlines() if line.startswith("{"))
        return [line for line in lines if line.get("event") == name]

    def first_time(self, name: str, after: float, **fields: Any) -> float | None:
        """When (epoch seconds, the daemon's clock) it first logged `name` with `fields` at or
        after `after` (a line from before — a flap under load — says nothing of what came
        after)."""
        for line in self.events(name):
            at = datetime.fromisoformat(line["timestamp"]).timestamp()
            if at >= after and all(line.get(k) == v for k, v in fields.items()):
                return at
        return None

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        assert self.process is not None
        assert self.process.poll() is None, self.log()[-3000:]
        try:
            status, text = await aget(f"http://127.0.0.1:{self.port}/metrics")
        except OSError:
            return {}
        assert status == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    async def value(self, name: str, **labels: str) -> float:
        samples = await self.metrics()
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    async def ready(self) -> bool:
        try:
            return (await aget(f"http://127.0.0.1:{self.port}/readyz"))[0] == 200
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        process = self.process
        return await anyio.to_thread.run_sync(lambda: process.wait(30))


async def stop_fleet(daemons: list[Daemon]) -> list[int]:
    """SIGTERM each running daemon; their exit codes (a killed one's stays what it was)."""
    return [await d.stop() for d in daemons]


async def start_fleet(daemons: list[Daemon], *, members: int | None) -> None:
    """Start every daemon; wait until each is ready and (coordinated) sees `members`."""
    for daemon in daemons:
        daemon.start()

    async def all_ready() -> bool:
        for daemon in daemons:
            if not await daemon.ready():
                return False
            seen = await daemon.value("retry_worker_coordination_members")
            if members is not None and seen != members:
                return False
        return True

    await wait_for(all_ready, timeout=60, interval=0.2)


def busiest_window(times: list[float], window: float) -> tuple[int, float]:
    """The most calls that arrived within any `window` seconds, and when that window began."""
    best, at, start = 0, 0.0, 0
    for end, t in enumerate(times):
        while t - times[start] > window:
            start += 1
        if end - start + 1 > best:
            best, at = end - start + 1, times[start]
    return best, at


def max_in_window(times: list[float], window: float) -> int:
    """The most calls that arrived within any `window` seconds."""
    return busiest_window(times, window)[0]
