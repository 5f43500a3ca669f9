"""Health and metrics endpoints on aiohttp's server, inside the daemon's task tree (no threads).

- `/livez` (and `/healthz`): 200 while every queue loop beat recently; no dependency checks.
- `/readyz`: 200 when every queue is resolved and its last receive succeeded, and the daemon
  is not shutting down; 503 otherwise. `?verbose` lists each check, and notes on what is
  degraded without being a failure (e.g. redrive sources that cannot be listed).
- `/metrics`: prometheus-client's own handler: text format or OpenMetrics as the scraper asks
  (`Accept`), gzip when accepted.

GET and HEAD on every path (405 with `Allow` otherwise), keep-alive. The accept loop is
asyncio's, which survives running out of descriptors (EMFILE): it pauses accepting for a
second and logs it, instead of ending the server.
"""

from __future__ import annotations

import anyio
import structlog
from aiohttp import web
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from worker.daemon.health import Health

log = structlog.get_logger("worker.daemon.http")

KEEPALIVE_SECONDS = 15.0  # an idle scraper connection is closed after this (one descriptor)
MAX_REQUEST_BYTES = 8192


def _checks(checks: list[tuple[str, bool]], verbose: bool, notes: list[str]) -> web.Response:
    status = 200 if all(ok for _, ok in checks) else 503
    lines = []
    if verbose:
        lines = [f"[{'+' if ok else '-'}] {name}" for name, ok in checks]
        lines += [f"[!] {note}" for note in notes]
    lines.append("ok" if status == 200 else "failed")
    return web.Response(status=status, text="\n".join(lines) + "\n")


class HttpServer:
    def __init__(self, health: Health, registry: CollectorRegistry, host: str, port: int):
        self._health = health
        self._registry = registry
        self._host = host
        self._port = port

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/healthz", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", make_aiohttp_handler(self._registry))
        return app

    async def _livez(self, request: web.Request) -> web.Response:
        return _checks(self._health.liveness(), "verbose" in request.query, [])

    async def _readyz(self, request: web.Request) -> web.Response:
        verbose = "verbose" in request.query
        return _checks(self._health.readiness(), verbose, self._health.notes())

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, keepalive_timeout=KEEPALIVE_SECONDS
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
            port = int(runner.addresses[0][1])
            log.info("http_listening", host=self._host, port=port)
            task_status.started(port)
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await runner.cleanup()
