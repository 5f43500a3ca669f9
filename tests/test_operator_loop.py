"""The day-2 loop on the emulator, with the real commands as processes and a running daemon:
park into a shared parking queue, summarise one queue's, dry-run a replay, fix the cause,
replay to the DLQ (fresh attempts) and to the target, purge with a backup, restore it, pause
and resume the daemon, and read it all in `status`."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.conftest import make_settings
from tests.helpers import depth, wait_for
from worker.daemon.app import serve
from worker.emulator import create_function, create_queue
from worker.emulator.proxy import Rule

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(300)]


class Cli:
    """`retry-worker …` as an operator runs it, against the same configuration."""

    def __init__(self, tmp_path: Path, tree: dict) -> None:
        self.cwd = tmp_path
        self.config = tmp_path / "config.yaml"
        self.config.write_text(yaml.safe_dump(tree))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RETRY_WORKER_")}
        self.env["RETRY_WORKER_CONFIG_DIR"] = str(tmp_path)

    async def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "worker", *args, "--config", str(self.config)]
        run = functools.partial(
            subprocess.run,
            command,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.cwd,
            timeout=120,
            check=False,
        )
        return await anyio.to_thread.run_sync(run)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """The command running (to stop it, or act beside it); `ended` waits for it."""
        command = [sys.executable, "-m", "worker", *args, "--config", str(self.config)]
        return subprocess.Popen(
            command,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @staticmethod
    async def ended(process: subprocess.Popen[str]) -> tuple[str, str]:
        return await anyio.to_thread.run_sync(lambda: process.communicate(timeout=60))

    async def interrupted(self, when: Callable[[], Any], *args: str) -> tuple[int, str, str]:
        """The command, Ctrl-C'd once `when` holds (waited on with a deadline): its exit
        code, stdout and stderr."""
        process = self.start(*args)
        try:
            await wait_for(when, timeout=60)
            process.send_signal(signal.SIGINT)
            out, err = await self.ended(process)
        finally:
            process.kill()
        return process.returncode, out, err

    async def json(self, *args: str):
        result = await self(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def _tree(endpoint: str) -> dict:
    settings = make_settings(
        endpoint,
        {
            "orders": {"name": "orders-dlq", "target": {"kind": "lambda", "function": "orders-fn"}},
            "billing": {
                "name": "billing-dlq",
                "target": {"kind": "lambda", "function": "billing-fn"},
            },
        },
        http={"host": "127.0.0.1", "port": 0},
    )
    tree = settings.model_dump(mode="json")
    tree["defaults"]["policy"]["max_attempts"] = 1  # a failure parks at once
    for queue in tree["queues"].values():
        queue["policy"]["max_attempts"] = 1
    tree.pop("discovery", None)
    return tree


def invoked(proxy, function: str) -> list[dict]:
    return [b for b in proxy.accepted_requests("lambda", "Invoke") if b.get("fn") == function]


async def test_the_whole_operator_loop(aws, proxy, tmp_path, monkeypatch):
    from worker.settings import Settings

    # the pause tag is read every 2 s, not 30: the loop waits on it twice
    monkeypatch.setattr("worker.dlq.pause.CHECK_INTERVAL_SECONDS", 2.0)

    for name in ("orders-fn", "billing-fn"):
        await create_function(aws.lambda_, name)
    orders = await create_queue(aws.sqs, "orders-dlq")
    billing = await create_queue(aws.sqs, "billing-dlq")
    parked = await create_queue(aws.sqs, "parked")
    broken = {
        name: proxy.add(Rule("lambda", "Invoke", "function_error", path=f"/functions/{name}/"))
        for name in ("orders-fn", "billing-fn")
    }
    for i, kind in enumerate("aabb"):
        body = {"fn": "orders-fn", "order": i, "kind": kind}
        await aws.sqs.send_message(QueueUrl=orders, MessageBody=json.dumps(body))
    for i in range(2):
        body = {"fn": "billing-fn", "invoice": i}
        await aws.sqs.send_message(QueueUrl=billing, MessageBody=json.dumps(body))
    tree = _tree(proxy.url)
    cli = Cli(tmp_path, tree)
    registry = CollectorRegistry()
    stop = anyio.Event()

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    async with anyio.create_task_group() as tg:
        await tg.start(functools.partial(serve, Settings(**tree), stop, registry=registry))
        await wait_for(lambda: _depth_is(aws, parked, 6), timeout=30)

        # summary counts only this queue's messages in the shared parking queue
        summary = await cli.json("parked", "summary", "orders")
        assert summary["queue"] == "orders"
        assert summary["total"] == 4
        assert summary["by_reason"] == {"max_attempts": 4}
        assert summary["by_error"] == {"FunctionError.Unhandled": 4}
        listed = await cli("parked", "list", "orders", "--json")
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert len(rows) == 4
        assert {r["reason"] for r in rows} == {"max_attempts"}
        assert "orders-fn" not in listed.stdout, "no bodies unless --show-body"

        # a dry run changes nothing and writes nothing
        dry = await cli("parked", "replay", "orders", "--match", "$.kind=a")
        assert dry.returncode == 0, dry.stderr
        assert "plan: replay to the dlq 2 parked messages of orders" in dry.stdout
        assert "dry run" in dry.stdout
        assert not list(tmp_path.glob("retry-worker-backup-*"))
        assert await depth(aws.sqs, parked) == 6

        # the cause is fixed; replay the matching ones to the DLQ: fresh attempts, delivered
        proxy.rules.remove(broken["orders-fn"])
        replay = await cli("parked", "replay", "orders", "--match", "$.kind=a", "--yes")
        assert replay.returncode == 0, replay.stdout + replay.stderr
        [backup] = tmp_path.glob("retry-worker-backup-orders-*.jsonl")
        saved = [json.loads(line) for line in backup.read_text().splitlines()]
        assert sorted(json.loads(s["body"])["order"] for s in saved) == [0, 1]
        assert all(s["meta"]["reason"] == "max_attempts" for s in saved)
        await wait_for(lambda: len(invoked(proxy, "orders-fn")) == 2, timeout=30)
        assert {b["kind"] for b in invoked(proxy, "orders-fn")} == {"a"}
        assert await depth(aws.sqs, parked) == 4

        # straight to the target
        direct = await cli("parked", "replay", "orders", "--to", "target", "--yes")
        assert direct.returncode == 0, direct.stdout + direct.stderr
        assert "done: 2, failed: 0" in direct.stdout
        assert sorted(b["order"] for b in invoked(proxy, "orders-fn")) == [0, 1, 2, 3]
        assert await depth(aws.sqs, parked) == 2

        # a replay the target still refuses stays parked, with the new error reported
        refused = await cli("parked", "replay", "billing", "--to", "target", "--yes")
        assert refused.returncode == 1
        assert "FunctionError.Unhandled (still parked)" in refused.stdout
        assert await depth(aws.sqs, parked) == 2

        # purge after a backup; restore brings them back with their parking metadata
        purge = await cli("parked", "purge", "billing", "--yes", "--backup", "purged.jsonl")
        assert purge.returncode == 0, purge.stdout + purge.stderr
        assert await depth(aws.sqs, parked) == 0
        assert len((tmp_path / "purged.jsonl").read_text().splitlines()) == 2
        again = await cli("parked", "purge", "billing", "--yes", "--backup", "purged.jsonl")
        assert again.returncode == 2, "a backup is never overwritten"
        restore = await cli("restore", "purged.jsonl", "--to", "parked", "--yes")
        assert restore.returncode == 0, restore.stdout + restore.stderr
        back = await cli.json("parked", "summary", "billing")
        assert back["total"] == 2
        assert back["by_reason"] == {"max_attempts": 2}

        # pause: the daemon stops receiving from orders at its next check, billing goes on
        paused = await cli("pause", "orders", "--reason", "maintenance")
        assert paused.returncode == 0, paused.stderr
        await wait_for(lambda: sample("retry_worker_queue_paused", queue="orders") == 1, timeout=40)
        status = {row["queue"]: row for row in await cli.json("status")}
        assert status["orders"]["paused"] is True
        assert status["billing"]["paused"] is False
        assert status["billing"]["parked"] == 2
        await aws.sqs.send_message(QueueUrl=orders, MessageBody='{"fn": "orders-fn", "late": 1}')
        polls = sample("retry_worker_receive_requests_total", queue="orders", result="empty")
        billing_polls = sample(
            "retry_worker_receive_requests_total", queue="billing", result="empty"
        )
        await wait_for(
            lambda: (
                sample("retry_worker_receive_requests_total", queue="billing", result="empty")
                >= billing_polls + 3
            ),
            timeout=20,
        )
        assert (
            sample("retry_worker_receive_requests_total", queue="orders", result="empty") == polls
        )
        assert len(invoked(proxy, "orders-fn")) == 4, "nothing delivered while paused"

        resumed = await cli("resume", "orders")
        assert resumed.returncode == 0, resumed.stderr
        await wait_for(lambda: len(invoked(proxy, "orders-fn")) == 5, timeout=40)
        assert sample("retry_worker_queue_paused", queue="orders") == 0
        status = {row["queue"]: row for row in await cli.json("status")}
        assert status["orders"]["paused"] is False
        assert status["orders"]["dlq"] == {"visible": 0, "in_flight": 0, "delayed": 0}
        stop.set()


async def _depth_is(aws, url: str, expected: int) -> bool:
    return await depth(aws.sqs, url) == expected
