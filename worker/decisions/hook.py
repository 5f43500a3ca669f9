"""A queue's hook: a Python function or a Lambda function that decides (SPEC.md, Decisions).

Whatever goes wrong is a retryable `DeliveryError`, never an exception out of the queue loop:
`HookError.<ExceptionType>` for a raised exception (`HookError.<Code>` for a Lambda hook's AWS
error, `HookError.FunctionError` for its own failure), `HookTimeout` past the timeout,
`HookError.InvalidDecision` for an answer that is not a decision, `HookError.InvalidPayload`
for a payload no target can take (a datetime, a Decimal, bytes, NaN, too deep, not UTF-8).

A sync Python hook runs on threads of its queue (at most `threads` at once, the queue's
concurrency up to 16): a slow or stuck hook holds its own queue's threads and nothing else. A
call that times out is abandoned, and its thread stays counted until the function returns, so a
stuck hook cannot start threads without bound; the calls after it wait for a thread and time
out in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
import threading
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, Protocol

import anyio

from worker.aws.clients import Client
from worker.aws.errors import classify
from worker.core.errors import DeliveryError, ErrorKind, said_type
from worker.core.jsontext import loads
from worker.decisions.expressions import as_payload
from worker.decisions.view import View
from worker.hooks import Decision, Defer, Deliver, Park
from worker.settings import VISIBILITY_LIMIT_SECONDS
from worker.settings.decisions import valid_reason

MAX_THREADS = 16  # a sync hook's threads per queue, at most


def hook_error(code: str, detail: str = "") -> DeliveryError:
    return DeliveryError(ErrorKind.RETRYABLE, code, detail[:500])


def _payload(view: View) -> bytes:
    """The view as UTF-8 JSON; a body with half a surrogate pair (valid JSON text, not valid
    UTF-8) is sent ASCII-escaped rather than fail the hook for it."""
    text = json.dumps(view, ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(view).encode("ascii")


def checked(answer: Any) -> Decision | None:
    """A hook's answer as a decision; anything else is `HookError.InvalidDecision`."""
    if answer is None:
        return None
    if isinstance(answer, Deliver):
        if answer.payload is None:
            return answer
        try:
            return Deliver(as_payload(answer.payload))
        except ValueError as exc:  # the message's own retryable failure, no batch-mate's
            raise hook_error("HookError.InvalidPayload", str(exc)) from exc
    if isinstance(answer, Defer):
        seconds = answer.seconds
        in_range = isinstance(seconds, int | float) and 1 <= seconds <= VISIBILITY_LIMIT_SECONDS
        if in_range and valid_reason(answer.reason):
            return answer
        raise hook_error("HookError.InvalidDecision", f"{answer!r}: seconds 1..43200, reason")
    if isinstance(answer, Park):
        if valid_reason(answer.reason) and (answer.error is None or isinstance(answer.error, str)):
            # A hook may pass on what a producer recorded: kept as SQS takes it, one line.
            return Park(answer.reason, said_type(answer.error))
        raise hook_error("HookError.InvalidDecision", f"{answer!r}: reason [a-z0-9_]{{1,40}}")
    raise hook_error("HookError.InvalidDecision", f"not a Deliver, Defer or Park: {answer!r}")


class Hook(Protocol):
    name: str  # for logs and explain

    async def __call__(self, view: View) -> Decision | None: ...

    def close(self) -> None: ...


class PythonHook:
    def __init__(self, name: str, function: Callable[..., Any], *, timeout: float, threads: int):
        self.name = name
        self._function = function
        self._timeout = timeout
        self._async = inspect.iscoroutinefunction(function)
        self._threads = asyncio.Semaphore(max(1, min(threads, MAX_THREADS)))

    async def __call__(self, view: View) -> Decision | None:
        message = MappingProxyType(view)
        try:
            with anyio.fail_after(self._timeout):
                if self._async:
                    answer = await self._function(message)
                else:
                    answer = await self._on_thread(message)
        except TimeoutError as exc:
            raise hook_error("HookTimeout", f"{self.name} took over {self._timeout} s") from exc
        except Exception as exc:  # user code: a classified, retryable failure
            raise hook_error(f"HookError.{type(exc).__name__}", str(exc)) from exc
        return checked(answer)

    async def _on_thread(self, message: Any) -> Any:
        """The function on a daemon thread of its own (a stuck hook never holds up the
        process's exit); the thread's slot is given back when the function returns, not when
        the caller stops waiting."""
        loop = asyncio.get_running_loop()
        await self._threads.acquire()
        future: asyncio.Future[Any] = loop.create_future()

        def finish(result: Any, error: BaseException | None) -> None:
            self._threads.release()
            if future.done():  # the caller timed out or was cancelled
                return
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

        def work() -> None:
            result, error = None, None
            try:
                result = self._function(message)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                error = exc
            with contextlib.suppress(RuntimeError):  # the event loop has closed
                loop.call_soon_threadsafe(finish, result, error)

        try:
            threading.Thread(target=work, name=f"hook:{self.name}", daemon=True).start()
        except BaseException:
            self._threads.release()
            raise
        return await future

    def close(self) -> None:
        return None


def lambda_answer(answer: Any) -> Decision | None:
    """`{"action": "deliver" | "defer" | "park", "payload"?, "delay_seconds"?, "reason"?,
    "error"?}` (or null: deliver) as a decision."""
    if answer is None:
        return None
    if not isinstance(answer, dict):
        raise hook_error("HookError.InvalidDecision", f"not an object: {str(answer)[:200]}")
    action = answer.get("action")
    if action == "deliver":
        payload = answer.get("payload")
        return checked(Deliver(payload))
    if action == "defer":
        delay = answer.get("delay_seconds")
        if not isinstance(delay, int | float) or isinstance(delay, bool) or math.isnan(delay):
            raise hook_error("HookError.InvalidDecision", "defer needs delay_seconds")
        return checked(Defer(delay, str(answer.get("reason") or "deferred")))
    if action == "park":
        return checked(Park(answer.get("reason"), answer.get("error")))  # type: ignore[arg-type]
    raise hook_error("HookError.InvalidDecision", f"unknown action {action!r}")


class LambdaHook:
    """The view is the input; the answer is the decision. RequestResponse, within the timeout."""

    def __init__(self, client: Client, function: str, *, timeout: float) -> None:
        self.name = f"lambda:{function}"
        self._client = client
        self._function = function
        self._timeout = timeout

    async def __call__(self, view: View) -> Decision | None:
        try:
            with anyio.fail_after(self._timeout):
                response = await self._client.invoke(
                    FunctionName=self._function,
                    InvocationType="RequestResponse",
                    Payload=_payload(view),
                )
                stream = response.get("Payload")
                raw = await stream.read() if stream is not None else b""
        except TimeoutError as exc:
            raise hook_error("HookTimeout", f"{self.name} took over {self._timeout} s") from exc
        except Exception as exc:  # classified: throttles, permissions, network
            failure = classify(exc)
            raise hook_error(f"HookError.{failure.code}", failure.detail) from exc
        if response.get("FunctionError"):
            raise hook_error("HookError.FunctionError", raw[:500].decode("utf-8", "replace"))
        try:
            answer = loads(raw) if raw.strip() else None
        except ValueError as exc:
            raise hook_error("HookError.InvalidDecision", "the answer is not JSON") from exc
        return lambda_answer(answer)

    def close(self) -> None:
        return None
