"""What runs beside the demo's daemon: the operator console, and a notification inbox (a
loopback webhook that prints each digest it receives, as a Slack channel would show it)."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from aiohttp import web

from worker.console.security import Lock
from worker.console.server import serve_console
from worker.settings import Settings


async def console_beside(
    settings: Settings, listen: tuple[str, int], stop: anyio.Event, *, task_status: Any
) -> None:
    """The operator console beside the daemon, on loopback (SPEC.md, Operator console)."""
    backups = Path(tempfile.mkdtemp(prefix="retry-worker-demo-backups-"))
    try:
        await serve_console(
            settings, Lock(None), listen, stop, backup_dir=backups, task_status=task_status
        )
    except OSError:  # the port is taken: any free one
        await serve_console(
            settings, Lock(None), (listen[0], 0), stop, backup_dir=backups, task_status=task_status
        )


@asynccontextmanager
async def printing_webhook() -> AsyncIterator[Path]:
    """Serves on a free loopback port; yields the file holding its URL (as a Secret would)."""

    async def received(request: web.Request) -> web.Response:
        posted = await request.json()
        text = str(posted.get("text", posted)).replace("\n", "\n         ")
        print(f"[slack] {text}", file=sys.stderr, flush=True)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hooks/demo", received)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    folder = anyio.Path(tempfile.mkdtemp(prefix="retry-worker-demo-"))
    secret = folder / "webhook-url"
    await secret.write_text(f"http://127.0.0.1:{port}/hooks/demo\n")
    try:
        yield Path(secret)
    finally:
        await runner.cleanup()
        await secret.unlink(missing_ok=True)
        await folder.rmdir()
