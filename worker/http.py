"""Health and metrics endpoints, served inside the daemon's task tree (no hidden threads).

- `/livez` (and `/healthz`): 200 while every queue loop beat recently; no dependency checks.
- `/readyz`: 200 when every queue is resolved and its last receive succeeded, and the daemon
  is not shutting down; 503 otherwise. `?verbose` lists each check.
- `/metrics`: Prometheus text format.

A deliberately small HTTP/1.1 server: GET only, one request per connection, bounded reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.abc import SocketStream, TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

if TYPE_CHECKING:
    from worker.poller import Poller

log = structlog.get_logger("worker.http")

LIVENESS_STALE_SECONDS = 120.0  # a queue loop beats at least every ~20 s (long poll)
MAX_REQUEST_BYTES = 8192
READ_TIMEOUT_SECONDS = 5.0


@dataclass
class Health:
    """What the endpoints look at; the composition root fills it in."""

    queues: list[str]
    pollers: dict[str, Poller] = field(default_factory=dict)
    stopping: bool = False
    clock: Callable[[], float] = time.monotonic

    def liveness(self) -> list[tuple[str, bool]]:
        now = self.clock()
        return [
            (f"queue {name} loop", now - p.last_progress < LIVENESS_STALE_SECONDS)
            for name, p in self.pollers.items()
        ]

    def readiness(self) -> list[tuple[str, bool]]:
        checks = [("configuration loaded", True), ("not shutting down", not self.stopping)]
        for name in self.queues:
            poller = self.pollers.get(name)
            checks.append((f"queue {name} resolved", poller is not None))
            ok = poller is not None and poller.last_receive_ok is True
            checks.append((f"queue {name} last receive succeeded", ok))
        return checks


def _response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
    head = (
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def _checks(checks: list[tuple[str, bool]], verbose: bool) -> bytes:
    status = 200 if all(ok for _, ok in checks) else 503
    lines = [f"[{'+' if ok else '-'}] {name}" for name, ok in checks] if verbose else []
    lines.append("ok" if status == 200 else "failed")
    return _response(status, ("\n".join(lines) + "\n").encode())


class HttpServer:
    def __init__(self, health: Health, registry: CollectorRegistry, host: str, port: int):
        self._health = health
        self._registry = registry
        self._host = host
        self._port = port

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host=self._host, local_port=self._port)
        port = int(listener.extra(anyio.abc.SocketAttribute.local_port))  # noqa: S610
        log.info("http_listening", host=self._host, port=port)
        task_status.started(port)
        async with listener:
            await listener.serve(self._handle)

    def route(self, method: str, target: str) -> bytes:
        path, _, query = target.partition("?")
        verbose = "verbose" in query.split("&")
        if method != "GET":
            return _response(405, b"GET only\n")
        if path in ("/livez", "/healthz"):
            return _checks(self._health.liveness(), verbose)
        if path == "/readyz":
            return _checks(self._health.readiness(), verbose)
        if path == "/metrics":
            return _response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)
        return _response(404, b"not found\n")

    async def _handle(self, stream: SocketStream) -> None:
        async with stream:
            data = b""
            try:
                with anyio.fail_after(READ_TIMEOUT_SECONDS):
                    while b"\r\n\r\n" not in data and len(data) < MAX_REQUEST_BYTES:
                        data += await stream.receive(4096)
                method, target, _ = data.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
                await stream.send(self.route(method, target))
            except (
                TimeoutError,
                ValueError,
                anyio.EndOfStream,
                anyio.BrokenResourceError,
                OSError,
            ):
                return  # a broken or slow client: drop it, never the server
