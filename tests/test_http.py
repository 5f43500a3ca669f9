"""Health endpoints and metrics, served by the running daemon (in-process, real HTTP)."""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.client
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
from worker.daemon.app import serve
from worker.daemon.health import Health
from worker.daemon.http import HttpServer
from worker.emulator import create_function, create_queue
from worker.emulator.proxy import Rule
from worker.metrics import Metrics

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
    def __init__(self, ok: bool | None, beat: float, notes: list[str] | None = None) -> None:
        self.last_receive_ok = ok
        self.last_progress = beat
        self._notes = notes or []

    def notes(self) -> list[str]:
        return self._notes


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


@contextlib.asynccontextmanager
async def http_server(health: Health, registry: CollectorRegistry | None = None):
    registry = registry or CollectorRegistry()
    async with anyio.create_task_group() as tg:
        port = await tg.start(HttpServer(health, registry, "127.0.0.1", 0).serve)
        yield port
        tg.cancel_scope.cancel()


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


async def test_routes_methods_and_notes():
    health = Health(["a"], clock=lambda: 1000.0)
    health.pollers["a"] = FakePoller(True, 1000.0, ["redrive sources unreadable (AccessDenied)"])
    async with http_server(health) as port:
        response, _ = await anyio.to_thread.run_sync(request, port, "GET", "/nope")
        assert response.status == 404
        response, _ = await anyio.to_thread.run_sync(request, port, "POST", "/readyz")
        assert response.status == 405
        assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}
        response, body = await anyio.to_thread.run_sync(request, port, "HEAD", "/readyz")
        assert (response.status, body) == (200, b"")
        response, body = await anyio.to_thread.run_sync(request, port, "GET", "/readyz?verbose")
        assert response.status == 200  # a note is not a failure
        assert b"[+] configuration loaded" in body
        assert b"[!] queue a: redrive sources unreadable (AccessDenied)" in body


async def test_metrics_negotiate_openmetrics_and_gzip_and_keep_alive():
    registry = CollectorRegistry()
    Metrics(registry)

    def scrape(port: int) -> list[tuple[int, dict[str, str], bytes]]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        out = []
        for headers in (
            {"Accept-Encoding": "gzip", "Accept": "application/openmetrics-text"},
            {},
        ):
            connection.request("GET", "/metrics", headers=headers)
            response = connection.getresponse()
            out.append((response.status, dict(response.headers), response.read()))
        sock = connection.sock  # still open: the second request reused the connection
        connection.close()
        assert sock is not None
        return out

    async with http_server(Health([]), registry) as port:
        (
            (status, headers, body),
            (plain_status, plain_headers, plain),
        ) = await anyio.to_thread.run_sync(scrape, port)
        head, head_body = await anyio.to_thread.run_sync(request, port, "HEAD", "/metrics")
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    text = gzip.decompress(body).decode()
    assert text.rstrip().endswith("# EOF")
    assert "retry_worker_build_info" in text
    assert plain_status == 200
    assert plain_headers["Content-Type"].startswith("text/plain")
    assert "Content-Encoding" not in plain_headers
    assert "# EOF" not in plain.decode()
    assert (head.status, head_body) == (200, b"")


@pytest.mark.slow
async def test_endpoints_follow_the_daemon_through_an_sqs_outage(aws, proxy):
    await create_function(aws.lambda_, "fn")
    dlq = await create_queue(aws.sqs, "fn-dlq")
    await create_queue(aws.sqs, "parked")
    # a message whose delete failed in the outage reappears after 5 s, not the default 30
    queue = {"name": "fn-dlq", "target": {"kind": "lambda", "function": "fn"}}
    queue["receive"] = {"visibility_timeout_seconds": 5}
    settings = make_settings(proxy.url, {"fn": queue}, http={"host": "127.0.0.1", "port": 0})
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
        # the container health check asks liveness: ECS must not replace the task for it
        assert await anyio.to_thread.run_sync(healthcheck, base + "/livez") == 0
        status, body = await aget(base + "/readyz?verbose")
        assert "[-] queue fn last receive succeeded" in body
        assert (await aget(base + "/livez"))[0] == 200, "an outage is not a dead process"

        proxy.rules.clear()  # SQS is back
        await wait_for(lambda: _status(base + "/readyz", 200), timeout=40)
        # a delete that failed in the outage: the message reappears after its visibility
        await wait_for(lambda: _delivered(aws, dlq), timeout=60)

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
