"""What runs beside the demo's daemon: the operator console, a notification inbox (a
loopback webhook that prints each digest it receives, as a Slack channel would show it), and
what a second terminal needs to run the operator commands against it."""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import yaml
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


CLI_CONFIG = "retry-worker-demo.yaml"
SAMPLE_ORDER = "retry-worker-demo-order.json"
# The emulator takes any credentials; these are what the printed commands pass it.
CREDENTIALS = "AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo"


def cli_handoff(settings: Settings, folder: Path) -> str:
    """Writes the demo's configuration (the emulator's own endpoint: no injected faults) and
    a sample order into `folder` (a temporary folder when it cannot be written); returns the
    commands that work from a second terminal, wherever it is: absolute paths, quoted."""
    tree = settings.model_dump(mode="json", exclude={"notify"})
    order = {"orderId": "o-7", "amount": 250, "currency": "EUR"}
    try:
        (folder / CLI_CONFIG).write_text(yaml.safe_dump(tree, sort_keys=False))
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="retry-worker-demo-"))
        (folder / CLI_CONFIG).write_text(yaml.safe_dump(tree, sort_keys=False))
    (folder / SAMPLE_ORDER).write_text(json.dumps(order) + "\n")
    program = Path(sys.executable).with_name("retry-worker")
    command = f"{CREDENTIALS} {shlex.quote(str(program)) if program.exists() else 'retry-worker'}"
    config = shlex.quote(str(folder.resolve() / CLI_CONFIG))
    sample = shlex.quote(str(folder.resolve() / SAMPLE_ORDER))
    lines = [
        f"[demo] from a second terminal, while the demo runs (its configuration: {config}):",
        f"         {command} status --config {config}",
        f"         {command} parked summary orders --config {config}",
        f"         {command} explain orders --body-file {sample} --config {config}",
    ]
    return "\n".join(lines)
