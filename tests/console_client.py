"""The console served in the test's own event loop, and a client that uses it as a browser
does (cookies, forms with their CSRF token, redirects followed)."""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from worker.console.security import Lock
from worker.console.server import serve_console
from worker.settings import Settings

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
JOB = re.compile(r"/jobs/([A-Za-z0-9_-]+)$")


class Page:
    def __init__(self, status: int, text: str, url: str, headers: Any) -> None:
        self.status = status
        self.text = text
        self.url = url
        self.headers = headers

    @property
    def csrf(self) -> str:
        found = CSRF.search(self.text)
        assert found, "the page has no form"
        return html.unescape(found.group(1))

    def element(self, element_id: str) -> str:
        """The text of the element with this id (tags removed, whitespace folded)."""
        pattern = rf'<(\w+)[^>]*\bid="{element_id}"[^>]*>(.*?)</\1>'
        found = re.search(pattern, self.text, re.S)
        assert found, f"no element #{element_id}"
        text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", found.group(2))).split())
        return re.sub(r" ([,.:;])", r"\1", text)


class Browser:
    def __init__(self, base: str, session: aiohttp.ClientSession, **headers: str) -> None:
        self.base = base.rstrip("/")
        self.session = session
        self.headers = headers

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Page:
        sent = {**self.headers, **(headers or {})}
        async with self.session.get(self.base + path, headers=sent) as r:
            return Page(r.status, await r.text(), str(r.url), r.headers)

    async def post(self, path: str, data: dict[str, Any] | list[tuple[str, str]]) -> Page:
        async with self.session.post(self.base + path, data=data, headers=self.headers) as r:
            return Page(r.status, await r.text(), str(r.url), r.headers)

    async def plan(self, queue: str, **form: Any) -> str:
        """Plan an action from the queue's page; returns the plan's job id once it is done."""
        page = await self.get(f"/queues/{queue}")
        fields = [("csrf", page.csrf)]
        for key, value in form.items():
            for v in value if isinstance(value, list) else [value]:
                fields.append((key, str(v)))
        planned = await self.post(f"/queues/{queue}/plan", fields)
        assert planned.status == 200, planned.text
        job = JOB.search(planned.url)
        assert job, planned.url
        await self.finished(job.group(1))
        return job.group(1)

    async def finished(self, job_id: str, timeout: float = 60) -> Page:
        with anyio.fail_after(timeout):
            while True:
                page = await self.get(f"/jobs/{job_id}")
                if 'id="state">running<' not in page.text:
                    return page
                await anyio.sleep(0.1)

    async def confirm(self, job_id: str, **form: str) -> Page:
        page = await self.get(f"/jobs/{job_id}")
        return await self.post(f"/jobs/{job_id}/confirm", {"csrf": page.csrf, **form})


@asynccontextmanager
async def running_console(
    settings: Settings, lock: Lock | None = None, backup_dir: Path | None = None
) -> AsyncIterator[tuple[str, io.StringIO]]:
    """The console on a free loopback port; yields its URL and its audit lines."""
    audit = io.StringIO()
    stop = anyio.Event()
    lock = lock or Lock(None)
    async with anyio.create_task_group() as tg:

        async def serve(*, task_status: Any) -> None:
            await serve_console(
                settings,
                lock,
                ("127.0.0.1", 0),
                stop,
                backup_dir=backup_dir or Path(),
                audit=audit,
                task_status=task_status,
            )

        url = await tg.start(serve)
        try:
            yield url, audit
        finally:
            stop.set()


@asynccontextmanager
async def browser(url: str, **headers: str) -> AsyncIterator[Browser]:
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1, as a browser keeps them
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        yield Browser(url, session, **headers)


def audit_lines(audit: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in audit.getvalue().splitlines() if line.strip()]
