"""The console's forms (POST, each with its CSRF token, checked by `security`): log in and
out, read a queue again, show a body, plan an action, confirm a plan. Every action goes
plan → confirmation → job."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from worker.console.jobs import ACTIONS, Job, dlq_refuses
from worker.console.pages import (
    build_filters,
    console_of,
    error_page,
    filter_params,
    message_page,
    query,
    queue_context,
)
from worker.console.security import LOCAL, SESSION_COOKIE, SESSION_SECONDS, WHO
from worker.core.errors import sqs_refuses
from worker.ops.acting import Move, reshape_for
from worker.ops.arguments import DEFAULT_RATE
from worker.ops.filters import FilterError

MAX_RATE = 1000.0
MAX_REASON = 200


_C0_OR_SPACE = "".join(chr(c) for c in range(0x21))
_TAB_OR_NEWLINE = re.compile("[\t\n\r]")


def _local_path(target: str) -> str:
    """Only a path of this console (never another site) after logging in, decided on what a
    browser makes of it (WHATWG URL parsing strips leading and trailing controls and spaces,
    removes tabs and newlines anywhere and reads `\\` as `/`): `/\t/evil.example` is
    `//evil.example`, another site. Else `/`."""
    url = _TAB_OR_NEWLINE.sub("", target.strip(_C0_OR_SPACE)).replace("\\", "/")
    parts = urlsplit(url)
    if not url.startswith("/") or url.startswith("//") or parts.scheme or parts.netloc:
        return "/"
    return url


async def login(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    form = await request.post()
    nxt = _local_path(str(form.get("next", "/")))
    who = console.lock.who_by_token(str(form.get("token", "")).strip())
    if who is None:
        raise web.HTTPSeeOther(f"/login?failed=1&next={quote(nxt)}")
    response = web.HTTPSeeOther(nxt)
    session = console.lock.open_session(who)
    response.set_cookie(
        SESSION_COOKIE,
        session,
        httponly=True,
        samesite="Strict",
        path="/",
        max_age=SESSION_SECONDS,
        secure=request.secure,
    )
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    console.lock.sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


def edited_body(form: Any, params: dict[str, list[str]]) -> str | None:
    """The body a person edited for one message (`body`), checked: JSON, and exactly one
    message selected by its id (the same body never goes to two)."""
    if "body" not in form:
        return None
    body = str(form["body"]).replace("\r\n", "\n")
    if len(params.get("id", ())) != 1 or set(params) != {"id"}:
        raise ValueError("an edited body replays exactly one message, chosen by its id")
    if "transform" in form and str(form["transform"]).strip():
        raise ValueError("an edited body or a transform, not both")
    if (refused := sqs_refuses(body)) is not None:  # and which no audit line could encode
        raise ValueError(f"the edited body holds {refused!r}, a character SQS refuses")
    try:
        json.loads(body, parse_constant=_not_json)
    except ValueError as exc:
        raise ValueError(f"the edited body is not JSON: {exc}") from exc
    return body


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


async def plan(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    ctx = await queue_context(request)
    form = await request.post()
    action = str(form.get("action", ""))
    if action not in ACTIONS:
        return error_page(request, 400, f"unknown action {action!r}")
    params = filter_params(form)
    move = None
    try:
        filters = build_filters(params)
        if action == "replay":
            to = str(form.get("to", "dlq"))
            if to not in ("dlq", "target"):
                return error_page(request, 400, f"replay to {to!r}: dlq or target")
            move = Move(
                to, str(form.get("transform", "")).strip() or None, edited_body(form, params)
            )
            reshape_for(ctx, move)  # a bad expression is said now, before any read
            if move.body is not None and to == "dlq":
                # said at once when the page's snapshot has the message (else by the plan)
                entry = (await console.snapshot(ctx)).find(params["id"][0])
                if entry is not None and (
                    why := await dlq_refuses(ctx, move.body, entry.view.attributes)
                ):
                    raise ValueError(why)
    except (FilterError, ValueError) as exc:
        return error_page(request, 400, str(exc))
    job = Job(
        id=secrets.token_urlsafe(12),
        kind="plan",
        action=action,
        queue=ctx.name,
        who=request.get(WHO) or LOCAL,
        params=params,
        filters=filters,
        move=move,
    )
    console.jobs.plan(ctx, job)
    raise web.HTTPSeeOther(f"/jobs/{job.id}")


async def confirm(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    planned = console.jobs.get(request.match_info["job_id"])
    if planned is None:
        return error_page(request, 404, "no such plan (the console keeps the last 200)")
    form = await request.post()
    try:
        rate = float(str(form.get("rate", DEFAULT_RATE)))
    except ValueError:
        return error_page(request, 400, "rate: a number of messages per second")
    if not 0 < rate <= MAX_RATE:
        return error_page(request, 400, f"rate: more than 0 and at most {MAX_RATE:g}")
    reason = str(form.get("reason", "")).strip()[:MAX_REASON] or None
    ctx = await console.context(planned.queue)
    try:
        job = console.jobs.confirm(ctx, planned, request.get(WHO) or LOCAL, rate, reason)
    except ValueError as exc:
        return error_page(request, 409, str(exc))
    raise web.HTTPSeeOther(f"/jobs/{job.id}")


async def refresh(request: web.Request) -> web.StreamResponse:
    """A new read of the queue's parking queue, then its page with the same filter."""
    console = console_of(request)
    ctx = await queue_context(request)
    params = filter_params(await request.post())
    await console.snapshot(ctx, refresh=True)
    raise web.HTTPSeeOther(f"/queues/{quote(ctx.name)}?{query(params)}")


async def show_body(request: web.Request) -> web.StreamResponse:
    """The message's page with its body, written to the audit log."""
    return await message_page(request, show_body=True)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/login", login, name="login")
    app.router.add_post("/logout", logout, name="logout")
    app.router.add_post("/queues/{queue}/refresh", refresh, name="refresh")
    app.router.add_post("/queues/{queue}/messages/{message_id}/body", show_body, name="show_body")
    app.router.add_post("/queues/{queue}/plan", plan, name="plan")
    app.router.add_post("/jobs/{job_id}/confirm", confirm)
