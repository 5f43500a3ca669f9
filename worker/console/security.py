"""The console's lock (SPEC.md, Operator console; docs/operating.md, The operator console).

- **Who may connect**: loopback only, unless `--auth-token-file` names the tokens; then
  every request carries `Authorization: Bearer <token>` or the login form's session cookie
  (HttpOnly, SameSite=Strict), else 401. Without tokens the `Host` header must name loopback
  too: a page of another site that a DNS name pointed at 127.0.0.1 (DNS rebinding) gets 403.
- **CSRF**: every POST carries the form field `csrf`, an HMAC of the browser's `rw_csrf`
  cookie (SameSite=Strict) *and its session* under a secret that lives only in this process;
  else 403. Bound to the session, a token someone got for a cookie they planted (from a
  sibling origin: cookies do not tell ports or subdomains apart) is worth nothing in the
  victim's session.
- **Other sites**: a request a browser marks as coming from another site
  (`Sec-Fetch-Site: cross-site` or `same-site`) is refused, but a link followed (a top-level
  GET): no `<img>`, form or fetch of another page reaches the console. Whatever starts work
  (a read of the parking queue, showing a body) is a POST with its token anyway.
- **Read-only**: every POST that changes a queue gets 403 (and the pages show no action);
  logging in and out, a new read and showing a body still work.
- **Headers** on every answer: a CSP without script, `X-Frame-Options: DENY`,
  `Cache-Control: no-store`, no referrer (filters in a URL may quote a payload), and a
  `Server` header that names no version.
- **Audit**: one JSON line per action and per "show body" (`Audit`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from worker.core.limits import SQS_MAX_MESSAGE_BYTES

CSRF_COOKIE = "rw_csrf"
# A form carries at most an edited body: as large as SQS takes (1 MiB), sent as it is by the
# edit form (multipart: URL-encoded, text in another script would take up to 9 times that),
# twice over: a browser sends a textarea's line breaks as CRLF (a body of short lines)
MAX_FORM_BYTES = 2 * SQS_MAX_MESSAGE_BYTES + 64 * 1024
SMALL_FORM_BYTES = 64 * 1024  # every other form (a login, a confirmation): a few fields
SESSION_COOKIE = "rw_session"
SESSION_SECONDS = 12 * 3600
MIN_TOKEN_CHARS = 16
LOCAL = "local"  # who acts when no token is configured
OPEN_PATHS = ("/login", "/static/", "/healthz")  # reachable before logging in
# The POSTs a read-only console still answers (route names): they change no queue.
READ_ONLY_POSTS = frozenset({"login", "logout", "refresh", "show_body"})
SERVER = "retry-worker"
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
WHO = web.RequestKey("who", str)  # the token's name, or "local"
NEW_CSRF = web.RequestKey("new_csrf", str)  # a CSRF cookie this answer sets
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TokenFileError(ValueError):
    """The token file cannot be used (bad arguments: exit 2)."""


def load_tokens(path: Path) -> dict[str, str]:
    """`NAME:TOKEN` per line (a line without a name is `operator`); blank lines and `#`
    comments skipped. Returns token -> name."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TokenFileError(f"--auth-token-file {path}: {exc.strerror}") from exc
    tokens: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.rpartition(":")
        name, token = (name.strip() or "operator") if sep else "operator", token.strip()
        if len(token) < MIN_TOKEN_CHARS:
            raise TokenFileError(
                f"--auth-token-file {path}:{number}: a token needs {MIN_TOKEN_CHARS} "
                "characters or more"
            )
        tokens[token] = name
    if not tokens:
        raise TokenFileError(f"--auth-token-file {path}: no token in it")
    return tokens


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Lock:
    tokens: dict[str, str] | None  # token -> name; None: loopback only, everyone is "local"
    read_only: bool = False
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    sessions: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (who, until)

    def who_by_token(self, token: str) -> str | None:
        for known, name in (self.tokens or {}).items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return name
        return None

    def who(self, request: web.Request) -> str | None:
        if self.tokens is None:
            return LOCAL
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            return self.who_by_token(token.strip())
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        if session is None or session[1] < time.time():
            return None
        return session[0]

    def open_session(self, who: str) -> str:
        now = time.time()
        self.sessions = {k: v for k, v in self.sessions.items() if v[1] >= now}
        session = secrets.token_urlsafe(32)
        self.sessions[session] = (who, now + SESSION_SECONDS)
        return session

    def csrf_token(self, request: web.Request) -> str:
        cookie = request.get(NEW_CSRF) or request.cookies.get(CSRF_COOKIE, "")
        return self.token_for(cookie, request.cookies.get(SESSION_COOKIE, ""))

    def token_for(self, cookie: str, session: str = "") -> str:
        """The CSRF token for a browser's cookie in its session ("" before logging in)."""
        message = f"{cookie}\x00{session}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def csrf_ok(self, request: web.Request, given: str) -> bool:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        return bool(cookie) and hmac.compare_digest(self.csrf_token(request), given)


def _refuse(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type="text/plain")


def _host_ok(request: web.Request) -> bool:
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    return is_loopback(host)


def middleware(lock: Lock, login_page: Handler) -> Any:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await _guarded(lock, login_page, request, handler)
        except web.HTTPException as exc:  # a redirect, a 404: the same headers
            _finish(request, exc)
            raise
        _finish(request, response)
        return response

    return guard


def _finish(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in HEADERS.items():
        response.headers[name] = value
    response.headers["Server"] = SERVER
    if request.get(NEW_CSRF):
        response.set_cookie(
            CSRF_COOKIE, request[NEW_CSRF], httponly=True, samesite="Strict", path="/"
        )


async def _guarded(
    lock: Lock, login_page: Handler, request: web.Request, handler: Handler
) -> web.StreamResponse:
    if lock.tokens is None and not _host_ok(request):
        return _refuse(403, "this console answers on loopback names only")
    if not request.cookies.get(CSRF_COOKIE):
        request[NEW_CSRF] = secrets.token_urlsafe(32)
    who = lock.who(request)
    open_path = request.path.startswith(OPEN_PATHS)
    if who is None and not open_path:
        response = await login_page(request)
        response.set_status(401)
        return response
    if who is not None:
        request[WHO] = who
    if _from_another_site(request):
        return _refuse(403, "a request from another site: open the console itself")
    if request.method == "POST" and (refused := await _post_refused(lock, request)):
        return refused
    return await handler(request)


async def _post_refused(lock: Lock, request: web.Request) -> web.Response | None:
    """Why a POST is not taken (read-only, too large, without its CSRF token), or None."""
    route = request.match_info.route.name
    if lock.read_only and route not in READ_ONLY_POSTS:
        return _refuse(403, "read-only console: no action is taken")
    # only a plan carries a body: any other form is read to SMALL_FORM_BYTES at most, and
    # says its length first (a browser's form does; one sent in chunks would be read whole)
    if route != "plan":
        if request.content_length is None and request.body_exists:
            return _refuse(411, "a form says its Content-Length")
        if (request.content_length or 0) > SMALL_FORM_BYTES:
            return _refuse(413, f"the form is over {SMALL_FORM_BYTES:,} bytes")
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        size = f"{MAX_FORM_BYTES:,}"
        return _refuse(413, f"the form is over {size} bytes: an edited body fits SQS's 1 MiB")
    if not lock.csrf_ok(request, str(form.get("csrf", ""))):
        return _refuse(403, "missing or invalid CSRF token: reload the page and try again")
    return None


def _from_another_site(request: web.Request) -> bool:
    """Another site's page made the browser send this (an image, a form, a fetch): anything
    but following a link. Browsers that send no Sec-Fetch-* headers are held by the POSTs'
    tokens alone."""
    site = request.headers.get("Sec-Fetch-Site", "")
    if site not in ("cross-site", "same-site"):
        return False
    headers = request.headers
    followed = (
        request.method == "GET"
        and headers.get("Sec-Fetch-Mode") == "navigate"
        and headers.get("Sec-Fetch-Dest", "document") == "document"
    )
    return not followed


class Audit:
    """One JSON object per line, whatever the logging format: who (the token's name, or
    "local"), action, queue, and what else the action knows (filter, counts, backup)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr

    def __call__(self, who: str, action: str, queue: str, **fields: Any) -> None:
        line = {
            "timestamp": datetime.now(UTC).isoformat(),
            "event": "audit",
            "who": who,
            "action": action,
            "queue": queue,
            **fields,
        }
        self._stream.write(json.dumps(line, default=str) + "\n")
        self._stream.flush()
