"""A fault-injecting, call-counting HTTP proxy in front of the local AWS emulator.

Used by the demo, the tests and the benchmark. It recognises the service (from the SigV4
credential scope) and the operation (X-Amz-Target, or the Lambda Invoke path), counts every
call, and applies the first matching rule:

- `error`: answer with an AWS-shaped error (status, code) without forwarding;
- `function_error`: forward a Lambda Invoke, then answer 200 with `X-Amz-Function-Error`;
- `fail_entries`: drop the first N entries of a *Batch request, forward the rest, and report
  the dropped ones in `Failed` (as SQS does when an entry fails server-side);
- `delay`: wait, then forward; `reset`: close the connection without an answer;
- with `after=True`, `error`, `reset` and `delay` come after forwarding: AWS acted, the
  answer was lost (a 500, a reset, a read timeout).

It answers a Lambda Invoke whose payload is not JSON as Lambda does
(`InvalidRequestContentException`); the emulator would echo it.

Randomness is seeded, so a run repeats. Runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

from aiohttp import ClientError, ClientSession, TCPConnector, web

from worker.emulator.journal import Journal, access_key, sent_at
from worker.emulator.rules import (
    Rule,
    answered,
    error_response,
    fail_entries,
    identify,
    lambda_refuses,
    request_body,
)

__all__ = ["FaultProxy", "Rule"]

_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "content-encoding", "host"}


class FaultProxy(Journal):
    def __init__(self, upstream: str, *, seed: int = 7, host: str = "127.0.0.1", port: int = 0):
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self._held: set[asyncio.Task[Any]] = set()  # requests a `delay` rule is holding now
        self._seed = seed
        self._rng = random.Random(seed)
        self._host, self._port = host, port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fault-proxy")
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- control (any thread) ----------------------------------------------------------------

    def add(self, rule: Rule, *, first: bool = False) -> Rule:
        """Add a rule, last (or `first`: before every other)."""
        with self._lock:
            self.rules.insert(0 if first else len(self.rules), rule)
        return rule

    def remove(self, rule: Rule) -> None:
        with self._lock:
            self.rules.remove(rule)

    def clear(self) -> None:
        self.forget()
        with self._lock:
            self.rules.clear()
            self._rng.seed(self._seed)  # each test sees the same faults, whatever ran before
        self.drop_held()

    @property
    def held(self) -> int:
        """Requests a `delay` rule is holding now."""
        with self._lock:
            return len(self._held)

    def drop_held(self) -> None:
        """End every request a `delay` rule holds, unanswered and never forwarded (as if the
        network lost it): a held request outlives neither its test nor its rule."""
        with self._lock:
            held = list(self._held)
        for task in held:
            self._loop.call_soon_threadsafe(task.cancel)

    def start(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        if not self.url:
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- serving -----------------------------------------------------------------------------

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._startup())
        self._ready.set()
        self._loop.run_forever()
        # Requests still waiting (a `delay` rule) end with the proxy, quietly.
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _startup(self) -> None:
        # A fresh upstream connection per request: the emulator drops idle keep-alive
        # connections, and a stale one would surface as an error the test never injected.
        self._session = ClientSession(
            auto_decompress=False, connector=TCPConnector(force_close=True)
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_cleanup.append(self._close_session)
        # Long polls may hold connections open; do not wait for them when stopping.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self._host}:{port}"

    async def _close_session(self, _: web.Application) -> None:
        await self._session.close()

    def _pick(
        self,
        service: str,
        operation: str,
        path: str,
        body: bytes,
        headers: dict[str, str],
        who: str,
        at: float,
        match: bool = True,
    ) -> Rule | None:
        with self._lock:
            if self.keep_journal:
                self.header_journal.append((service, operation, headers))
            self.calls[(service, operation)] += 1
            self.arrivals.append((at, service, operation, path, who))
            if self.keep_journal and (parsed := request_body(body)) is not None:
                self.journal.append((service, operation, parsed))
            for rule in self.rules if match else []:
                if rule.matches(service, operation, path, body, self._rng):
                    rule.applied += 1
                    return rule
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        service, operation = identify(request, body)
        key = (service, operation)
        with self._lock:
            self.in_flight[key] += 1
            self.peak[key] = max(self.peak[key], self.in_flight[key])
        try:
            return await self._answer(request, body, service, operation)
        finally:
            with self._lock:
                self.in_flight[key] -= 1

    async def _answer(
        self, request: web.Request, body: bytes, service: str, operation: str
    ) -> web.StreamResponse:
        amz = {
            k.lower(): v
            for k, v in request.headers.items()
            if k.lower().startswith(("x-amz-", "x-amzn-"))
        }
        who = access_key(request.headers.get("Authorization", ""))
        refused = lambda_refuses(operation, body) if service == "lambda" else None
        # A request Lambda refuses is counted, but no rule is spent on it.
        at = sent_at(request.headers)
        rule = self._pick(service, operation, request.path, body, amz, who, at, refused is None)
        if refused is not None:
            return refused
        if rule is not None and not rule.after:
            made = await self._before(request, body, rule)
            if made is not None:
                return made
        try:
            status, headers, payload = await self._forward(request, body)
        except ClientError as exc:  # the emulator dropped the connection: a gateway error
            self.upstream_errors.append((service, operation, type(exc).__name__))
            return web.Response(status=502, text=f"upstream: {type(exc).__name__}")
        if rule is not None and status == 200 and (made := answered(rule, headers, payload)):
            return made
        if status < 300 and "X-Amz-Function-Error" not in headers:
            self._accepted(service, operation, body)
        if rule is not None and rule.after:
            return await self._lose_answer(request, rule)
        return web.Response(status=status, body=payload, headers=headers)

    async def _before(self, request: web.Request, body: bytes, rule: Rule) -> web.Response | None:
        """A fault before forwarding: an answer in place of AWS's, or None (forward)."""
        if rule.action == "error":
            return error_response(rule)
        if rule.action == "reset":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if rule.action == "delay":
            await self._hold(rule.seconds)
        if rule.action == "fail_entries":
            return await fail_entries(self._forward, request, body, rule)
        return None

    async def _hold(self, seconds: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        with self._lock:
            self._held.add(task)
        try:
            await asyncio.sleep(seconds)
        finally:
            with self._lock:
                self._held.discard(task)

    async def _lose_answer(self, request: web.Request, rule: Rule) -> web.Response:
        """What the client sees of a request AWS carried out: an error, a reset connection,
        or (`delay`) an answer too late for its read timeout."""
        if rule.action == "error":
            return error_response(rule)
        if rule.action == "delay":
            await self._hold(rule.seconds)
            return error_response(rule)
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError

    def _accepted(self, service: str, operation: str, body: bytes) -> None:
        if self.keep_journal and (parsed := request_body(body)) is not None:
            with self._lock:
                self.accepted.append((service, operation, parsed))

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as response:
            payload = await response.read()
            out = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_HEADERS}
            return response.status, out, payload
