"""Health endpoints and metrics, served by the running daemon (in-process, real HTTP)."""

from __future__ import annotations

import functools
import subprocess
import sys
import urllib.error
import urllib.request

import anyio
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_settings
from tests.helpers import depth, wait_for
from worker.app import serve
from worker.emulator import create_function, create_queue
from worker.emulator.proxy import Rule
from worker.http import Health, HttpServer

pytestmark = pytest.mark.anyio


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def aget(url: str) -> tuple[int, str]:
    return await anyio.to_thread.run_sync(get, url)


def healthcheck(url: str) -> int:
    result = subprocess.run(
        [sys.executable, "-m", "worker", "healthcheck", "--url", url],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.returncode


class FakePoller:
    def __init__(self, ok: bool | None, beat: float) -> None:
        self.last_receive_ok = ok
        self.last_progress = beat


def test_readiness_needs_every_queue_resolved_and_receiving():
    health = Health(["a", "b"], clock=lambda: 1000.0)
    assert not all(ok for _, ok in health.readiness())  # nothing resolved yet
    health.pollers["a"] = FakePoller(True, 1000.0)
    health.pollers["b"] = FakePoller(None, 1000.0)  # resolved, no receive yet
    assert not all(ok for _, ok in health.readiness())
    health.pollers["b"].last_receive_ok = True
    assert all(ok for _, ok in health.readiness())
    health.pollers["b"].last_receive_ok = False
    assert not all(ok for _, ok in health.readiness())
    health.pollers["b"].last_receive_ok = True
    health.stopping = True
    assert ("not shutting down", False) in health.readiness()


def test_liveness_fails_when_a_queue_loop_stops_beating():
    now = [1000.0]
    health = Health(["a"], clock=lambda: now[0])
    health.pollers["a"] = FakePoller(False, 1000.0)  # failing receives are still alive
    assert all(ok for _, ok in health.liveness())
    now[0] += 121
    assert not all(ok for _, ok in health.liveness())


def test_routes():
    registry = CollectorRegistry()
    server = HttpServer(Health([]), registry, "127.0.0.1", 0)
    assert server.route("GET", "/nope").startswith(b"HTTP/1.1 404")
    assert server.route("POST", "/readyz").startswith(b"HTTP/1.1 405")
    verbose = server.route("GET", "/readyz?verbose")
    assert verbose.startswith(b"HTTP/1.1 200")
    assert b"[+] configuration loaded" in verbose


async def test_endpoints_follow_the_daemon_through_an_sqs_outage(aws, proxy):
    await create_function(aws.lambda_, "fn")
    dlq = await create_queue(aws.sqs, "fn-dlq")
    await create_queue(aws.sqs, "parked")
    settings = make_settings(
        proxy.url,
        {"fn": {"name": "fn-dlq", "target": {"kind": "lambda", "function": "fn"}}},
        http={"host": "127.0.0.1", "port": 0},
    )
    registry = CollectorRegistry()
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        runtime = await tg.start(functools.partial(serve, settings, stop, registry=registry))
        base = f"http://127.0.0.1:{runtime.http_port}"
        await wait_for(lambda: _healthy(base + "/readyz"), timeout=20)
        assert (await aget(base + "/livez"))[0] == 200
        assert (await aget(base + "/healthz"))[0] == 200

        proxy.add(Rule("sqs", None, "reset"))  # SQS unreachable
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"during": "outage"}')
        await wait_for(lambda: _status(base + "/readyz", 503), timeout=20)
        assert await anyio.to_thread.run_sync(healthcheck, base + "/readyz") == 1
        status, body = await aget(base + "/readyz?verbose")
        assert "[-] queue fn last receive succeeded" in body
        assert (await aget(base + "/livez"))[0] == 200, "an outage is not a dead process"

        proxy.rules.clear()  # SQS is back
        await wait_for(lambda: _status(base + "/readyz", 200), timeout=40)
        await wait_for(lambda: _delivered(aws, dlq), timeout=20)

        status, text = await aget(base + "/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert "retry_worker_build_info" in families
        errors = [
            s
            for s in families["retry_worker_receive_requests"].samples
            if s.labels["result"] == "error"
        ]
        assert errors
        assert errors[0].value >= 1
        stop.set()


async def _healthy(url: str) -> bool:
    return await anyio.to_thread.run_sync(healthcheck, url) == 0


async def _status(url: str, expected: int) -> bool:
    return (await aget(url))[0] == expected


async def _delivered(aws, dlq: str) -> bool:
    return await depth(aws.sqs, dlq) == 0
