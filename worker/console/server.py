"""`retry-worker console`: the application, its state, and serving it until Ctrl-C/SIGTERM."""

from __future__ import annotations

import argparse
import functools
import socket
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TextIO

import aiohttp_jinja2
import anyio
import jinja2
from aiohttp import web
from anyio.abc import TaskStatus

from worker.aws.clients import OPERATOR, Clients
from worker.aws.errors import innermost
from worker.console import actions, pages, words
from worker.console.jobs import Jobs
from worker.console.security import (
    MAX_FORM_BYTES,
    Audit,
    Lock,
    TokenFileError,
    is_loopback,
    load_tokens,
    middleware,
)
from worker.console.snapshot import QueueLocks, Snapshots
from worker.console.state import CONSOLE, Console
from worker.ops.store import Location, folder
from worker.settings import Settings

DEFAULT_LISTEN = "127.0.0.1:8090"
POOL = 32  # a snapshot's receives and a job's receives and moves at once
HERE = Path(__file__).parent


class ListenError(ValueError):
    """--listen cannot be used as given (bad arguments: exit 2)."""


def parse_listen(text: str, token_file: str | None) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ListenError(f"--listen {text}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    host = host.strip("[]")
    if not is_loopback(host) and token_file is None:
        raise ListenError(
            f"--listen {text}: not a loopback address; a console reachable from elsewhere "
            "needs --auth-token-file"
        )
    return host, int(port)


def build_app(console: Console) -> web.Application:
    guard = middleware(console.lock, pages.login_page)
    app = web.Application(middlewares=[guard], client_max_size=MAX_FORM_BYTES)
    app[CONSOLE] = console
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
    )
    env.filters.update(ago=words.ago, plural=words.plural)
    pages.add_routes(app)
    actions.add_routes(app)
    app.router.add_static("/static/", HERE / "static")
    return app


async def serve_console(
    settings: Settings,
    lock: Lock,
    listen: tuple[str, int],
    stop: anyio.Event,
    *,
    backup_dir: Location = Path(),
    audit: TextIO | None = None,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `stop`; `task_status` gets the console's URL once it listens (an OSError
    at once if the address cannot be bound)."""
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    sock = socket.create_server(listen, family=family)
    async with AsyncExitStack() as stack:
        stack.callback(sock.close)
        clients = Clients(settings.aws, stack, pool=POOL, accounts=settings.accounts, who=OPERATOR)
        async with anyio.create_task_group() as tasks:
            locks = QueueLocks()
            snapshots = Snapshots(tasks, locks)
            jobs = Jobs(
                tasks,
                locks,
                snapshots,
                clients,
                Audit(audit),
                backup_dir,
                log_bodies=settings.logging.log_bodies,
            )
            app = build_app(Console(settings, clients, lock, snapshots, jobs))
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            try:
                await web.SockSite(runner, sock).start()
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                task_status.started(f"http://{shown}:{port}/")
                await stop.wait()
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await runner.cleanup()
                tasks.cancel_scope.cancel()


async def _main(settings: Settings, lock: Lock, listen: tuple[str, int], backup: Location) -> None:
    from worker.ops.commands import interruptible

    async with interruptible() as stop, anyio.create_task_group() as tg:
        serve = functools.partial(serve_console, backup_dir=backup)
        url = await tg.start(serve, settings, lock, listen, stop)
        mode = " (read-only)" if lock.read_only else ""
        print(f"console: {url}{mode}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        tokens = load_tokens(Path(args.auth_token_file)) if args.auth_token_file else None
        listen = parse_listen(args.listen, args.auth_token_file)
    except (TokenFileError, ListenError) as exc:
        print(f"console: {exc}", file=sys.stderr)
        return 2
    try:
        backup = folder(args.backup_dir or settings.operator.backup_dir or ".")
    except ValueError as exc:
        print(f"console: --backup-dir {exc}", file=sys.stderr)
        return 2
    if isinstance(backup, Path) and not backup.is_dir():
        print(f"console: --backup-dir {backup}: not a directory", file=sys.stderr)
        return 2
    try:
        anyio.run(_main, settings, Lock(tokens, read_only=args.read_only), listen, backup)
    except Exception as exc:
        inner = innermost(exc)  # raised inside a task group
        if not isinstance(inner, OSError):
            raise
        print(f"console: cannot listen on {args.listen}: {inner.strerror}", file=sys.stderr)
        return 2
    return 0
