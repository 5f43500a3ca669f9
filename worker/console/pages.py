"""The console's pages (GET): every queue, one queue's parked messages, one message, a job."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
import anyio
from aiohttp import web

from worker.aws.attributes import read_pause
from worker.aws.errors import error_code
from worker.console import glance
from worker.console.security import LOCAL, WHO
from worker.console.snapshot import by_error_type, grouped
from worker.console.state import CONSOLE, Console
from worker.ops.context import ContextError, unreachable
from worker.ops.filters import FilterError, Filters
from worker.ops.reading import ParkingReads, oldest_text, status_row
from worker.ops.store import s3_lines

PAGE_SIZE = 50
STATUS_CONCURRENCY = 16
FILTER_PARAMS = (
    "reason",
    "error",
    "error_type",
    "id",
    "parked_before",
    "parked_after",
    "body_contains",
    "match",
)


def console_of(request: web.Request) -> Console:
    return request.app[CONSOLE]


def render(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    console = console_of(request)
    common = {
        "who": request.get(WHO) or LOCAL,
        "read_only": console.lock.read_only,
        "auth": console.lock.tokens is not None,
        "csrf": console.lock.csrf_token(request),
    }
    return aiohttp_jinja2.render_template(template, request, {**common, **values}, status=status)


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    return render(request, "error.html", status=status, message=message)


async def login_page(request: web.Request) -> web.Response:
    nxt = request.path_qs if request.path != "/login" else request.query.get("next", "/")
    return render(request, "login.html", next=nxt, failed="failed" in request.query)


def filter_params(source: Mapping[str, Any]) -> dict[str, list[str]]:
    """The filter's query parameters that carry a value (an empty form field is no filter)."""
    out = {}
    for name in FILTER_PARAMS:
        values = [str(v) for v in source.getall(name, []) if str(v).strip()]  # type: ignore[attr-defined]
        if values:
            out[name] = values
    return out


def build_filters(params: Mapping[str, Sequence[str]]) -> Filters:
    def one(name: str) -> str | None:
        values = params.get(name)
        return values[0] if values else None

    return Filters.build(
        reasons=params.get("reason", ()),
        errors=params.get("error", ()),
        error_types=params.get("error_type", ()),
        ids=params.get("id", ()),
        parked_before=one("parked_before"),
        parked_after=one("parked_after"),
        body_contains=one("body_contains"),
        match=params.get("match", ()),
    )


def query(params: Mapping[str, Sequence[str]], **extra: Any) -> str:
    pairs = [(k, v) for k, values in params.items() for v in values]
    pairs += [(k, str(v)) for k, v in extra.items() if v is not None]
    return urlencode(pairs)


async def index(request: web.Request) -> web.Response:
    console = console_of(request)
    rows: dict[str, dict[str, Any]] = {}
    limit = anyio.Semaphore(STATUS_CONCURRENCY)
    shared = ParkingReads()  # a parking queue several DLQs share is read once a page

    async def row(name: str) -> None:
        queue = console.settings.queues[name]
        async with limit:
            try:  # the queues' URLs resolved once per console (its contexts), not per page
                ctx = await console.context(name)
                rows[name] = await status_row(name, queue, ctx.dlq, ctx.parking, shared)
            except Exception as exc:  # noqa: BLE001 - one row says it, the page goes on
                rows[name] = {"queue": name, "target": queue.target_key, "error": unreachable(exc)}

    breakers, table_error = await glance.breakers(console)
    async with anyio.create_task_group() as tg:
        for name in console.settings.queues:
            tg.start_soon(row, name)
    now = time.time()
    coordinated = console.settings.coordination.backend == "dynamodb"
    ordered = [rows[name] for name in console.settings.queues]
    for item in ordered:
        if "error" not in item:
            item["oldest"] = oldest_text(item, now)
    for item in ordered if coordinated else ():
        note = breakers.get(item["target"])
        item["breaker"] = (
            f"unknown ({table_error})" if table_error else glance.breaker_text(note, now)
        )
    settings = console.settings
    # where each queue lives, when they do not all live in one place (`accounts:`)
    places = bool(settings.accounts) or any(q.region for q in settings.queues.values())
    for item, queue in zip(ordered, settings.queues.values(), strict=True):
        item["where"] = f"{queue.account or 'own'}/{queue.region or settings.aws.region}"
    reading = await glance.own_counts(console, ordered)
    return render(
        request,
        "queues.html",
        rows=ordered,
        coordinated=coordinated,
        reading=reading,
        places=places,
    )


async def queue_context(request: web.Request) -> Any:
    console = console_of(request)
    name = request.match_info["queue"]
    if name not in console.settings.queues:
        raise web.HTTPNotFound(text=f"{name}: not a configured queue")
    try:
        return await console.context(name)
    except ContextError as exc:
        raise web.HTTPNotFound(text=str(exc)) from exc
    except Exception as exc:
        raise web.HTTPServiceUnavailable(text=f"{name}: {unreachable(exc)}") from exc


async def queue_page(request: web.Request) -> web.Response:
    console = console_of(request)
    ctx = await queue_context(request)
    params = filter_params(request.query)
    try:
        filters = build_filters(params)
    except FilterError as exc:
        return error_page(request, 400, str(exc))
    snapshot = await console.snapshot(ctx)
    pause: Any = None
    pause_error: str | None = None
    try:
        pause = await read_pause(ctx.dlq.client, ctx.dlq.url)
    except Exception as exc:  # noqa: BLE001 - the page says it and goes on
        pause_error = error_code(exc)
    matching = snapshot.matching(filters)
    pages = max(1, -(-len(matching) // PAGE_SIZE))
    page = min(max(1, _int(request.query.get("page"), 1)), pages)
    shown = matching[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    return render(
        request,
        "queue.html",
        ctx=ctx,
        snapshot=snapshot,
        reading=snapshot.finished is None,
        params=params,
        one={k: v[0] for k, v in params.items()},
        filtered=bool(params),
        query=query,
        by_reason=grouped(matching, "reason"),
        by_error=grouped(matching, "error"),
        by_error_type=by_error_type(matching),
        total=len(matching),
        messages=shown,
        page=page,
        pages=pages,
        target=ctx.settings.target_key,
        target_kind=ctx.settings.target.kind,
        pause=pause,
        pause_error=pause_error,
    )


def _int(text: str | None, default: int) -> int:
    try:
        return int(text or default)
    except ValueError:
        return default


async def message_page(request: web.Request, *, show_body: bool = False) -> web.Response:
    """The message's metadata and attributes; its body only when asked (a POST: `actions`)."""
    console = console_of(request)
    ctx = await queue_context(request)
    message_id = request.match_info["message_id"]
    snapshot = await console.snapshot(ctx)
    entry = snapshot.find(message_id)
    if entry is None:
        text = f"{message_id} is not in the snapshot of {ctx.name} (moved since, or not read)"
        return error_page(request, 404, text)
    if show_body:
        audit = console.jobs.audit
        audit(request.get(WHO) or LOCAL, "show_body", ctx.name, message_id=message_id)
    # kind auto: the body is the DLQ message's envelope, not what the target gets
    editable = ctx.settings.target.kind != "auto"
    return render(
        request, "message.html", ctx=ctx, entry=entry, show_body=show_body, editable=editable
    )


async def job_page(request: web.Request) -> web.Response:
    console = console_of(request)
    job = console.jobs.get(request.match_info["job_id"])
    if job is None:
        return error_page(request, 404, "no such job (the console keeps the last 200)")
    shows = job.kind == "plan" and job.state in ("done", "confirmed")  # as job.html does
    if shows and job.example is not None:  # a parked body, shown: audited for each who
        # sees it, as the message's own page is
        who = request.get(WHO) or LOCAL
        console.jobs.audit(who, "show_body", job.queue, message_id=job.example_id, by="plan")
    folder = console.jobs.backup_dir
    backups = folder.resolve() if isinstance(folder, Path) else folder
    return render(request, "job.html", job=job, query=query, now=time.time(), backup_dir=backups)


async def download(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    job = console.jobs.get(request.match_info["job_id"])
    if job is None or job.action != "export" or job.state != "done" or job.backup is None:
        return error_page(request, 404, "no finished export of that id")
    # the export's bodies leave the console: each download is an audit line of its own
    who = request.get(WHO) or LOCAL
    console.jobs.audit(who, "download", job.queue, export=str(job.backup), job=job.id)
    if not isinstance(job.backup, Path):  # streamed from S3, a part at a time
        streamed = web.StreamResponse(
            headers={"Content-Disposition": f'attachment; filename="{job.backup.name}"'}
        )
        streamed.content_type = "application/x-ndjson"
        await streamed.prepare(request)
        async for line, _ in s3_lines(job.backup, console.clients):
            await streamed.write((line + "\n").encode("utf-8"))
        await streamed.write_eof()
        return streamed
    response = web.FileResponse(job.backup)
    response.headers["Content-Disposition"] = f'attachment; filename="{job.backup.name}"'
    response.content_type = "application/x-ndjson"
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/login", login_page)
    app.router.add_get("/queues/{queue}", queue_page)
    app.router.add_get("/queues/{queue}/messages/{message_id}", message_page)
    app.router.add_get("/jobs/{job_id}", job_page)
    app.router.add_get("/jobs/{job_id}/download", download)
