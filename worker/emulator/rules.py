"""What the fault proxy recognises in a request (service and operation) and what a rule does
with it: the rule itself, an AWS-shaped error, a function's answer in place of the emulator's."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, parse_qsl

from aiohttp import web

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/")
_INVOKE = re.compile(r"^/[^/]+/functions/[^/]+/invocations$")


@dataclass
class Rule:
    service: str  # as in the SigV4 scope (sqs, lambda, states, ...), or "*" for any
    operation: str | None = None  # None: every operation of the service
    # error | function_error | fail_entries | delay | reset | answer (a function's answer:
    # forwarded, then answered with `extra` as the JSON payload) | system_attributes (a
    # ReceiveMessage forwarded, `extra` added to every message's system attributes, as SQS
    # adds `DeadLetterQueueSourceArn`, which the emulator never does)
    action: str = "error"
    status: int = 500
    code: str = "InternalFailure"
    probability: float = 1.0
    times: int | None = None  # apply at most this many times
    entries: int = 1  # fail_entries: how many
    seconds: float = 0.0  # delay
    extra: dict[str, Any] = field(default_factory=dict)  # error body fields
    path: str | None = None  # only requests whose path contains this (e.g. a function name)
    body: str | None = None  # only requests whose body contains this (e.g. a queue URL)
    # error | reset | delay *after* forwarding: AWS did it, the answer was lost (a 500, a
    # reset connection, a read timeout) — where real duplicates and "did it happen?" come from
    after: bool = False
    applied: int = 0

    def matches(
        self, service: str, operation: str, path: str, body: bytes, rng: random.Random
    ) -> bool:
        if self.service not in ("*", service):
            return False
        if self.operation and self.operation != operation:
            return False
        if self.path is not None and self.path not in path:
            return False
        if self.body is not None and self.body.encode() not in body:
            return False
        if self.times is not None and self.applied >= self.times:
            return False
        return rng.random() < self.probability


def identify(request: web.Request, body: bytes = b"") -> tuple[str, str]:
    match = _SCOPE.search(request.headers.get("Authorization", ""))
    service = match.group(1) if match else "unknown"
    target = request.headers.get("X-Amz-Target", "")
    if target:  # JSON protocols (SQS, Step Functions, EventBridge)
        return service, target.rsplit(".", 1)[-1]
    if request.content_type == "application/x-www-form-urlencoded":  # query protocol (SNS)
        action = parse_qs(body.decode("utf-8", "replace")).get("Action")
        if action:
            return service, action[0]
    if service == "lambda" and _INVOKE.match(request.path):
        return service, "Invoke"
    return service, request.method + " " + request.path.split("/")[1:2][0]


def request_body(body: bytes) -> Any:
    """What a request asked, for the journal: a JSON body as it is, a query-protocol form
    (SNS) as a flat dict of its fields (`PublishBatchRequestEntries.member.1.Message`); None
    for anything else (a Lambda payload that is not JSON)."""
    if body[:1] == b"{":
        try:
            return json.loads(body)
        except ValueError:
            return None
    if body.startswith(b"Action="):
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return None


def answered(rule: Rule, headers: dict[str, str], payload: bytes) -> web.Response | None:
    """What the rule makes of the emulator's successful answer (None: it stands as it is)."""
    if rule.action in ("answer", "function_error"):
        return answer(rule, headers)
    if rule.action == "system_attributes":
        return web.Response(body=with_system_attributes(rule, payload), headers=headers)
    return None


def with_system_attributes(rule: Rule, payload: bytes) -> bytes:
    """A ReceiveMessage answer with the rule's `extra` in every message's `Attributes`."""
    received = json.loads(payload)
    for message in received.get("Messages", []):
        message["Attributes"] = {**message.get("Attributes", {}), **rule.extra}
    return json.dumps(received).encode()


def lambda_refuses(operation: str, body: bytes) -> web.Response | None:
    """Lambda's answer to an Invoke whose payload is not JSON (the emulator echoes anything)."""
    if operation != "Invoke" or not body:
        return None
    try:
        json.loads(body)
    except ValueError:
        rule = Rule("lambda", status=400, code="InvalidRequestContentException")
        return error_response(rule, "Could not parse request body into json")
    return None


def error_response(rule: Rule, message: str = "") -> web.Response:
    body = {"__type": rule.code, "message": message or f"injected {rule.code}", **rule.extra}
    headers = {"x-amzn-ErrorType": rule.code, "x-amzn-query-error": f"{rule.code};Receiver"}
    if "retryAfterSeconds" in rule.extra:
        headers["Retry-After"] = str(rule.extra["retryAfterSeconds"])
    return web.json_response(body, status=rule.status, headers=headers)


def answer(rule: Rule, headers: dict[str, str]) -> web.Response:
    """A function's answer in place of the emulator's: `extra` as its payload (`answer`), or
    a failure of the function itself (`function_error`)."""
    payload: dict[str, Any] = rule.extra
    if rule.action == "function_error":
        payload = rule.extra or {"errorMessage": "injected failure", "errorType": "InjectedError"}
        headers["X-Amz-Function-Error"] = "Unhandled"
    return web.Response(status=200, body=json.dumps(payload).encode(), headers=headers)


Forward = Callable[[web.Request, bytes], Awaitable[tuple[int, dict[str, str], bytes]]]


async def fail_entries(
    forward: Forward, request: web.Request, body: bytes, rule: Rule
) -> web.Response:
    """A *Batch request with its first `rule.entries` entries reported `Failed` (not sent);
    the rest forwarded, their results merged in."""
    data = json.loads(body)
    dropped, kept = data["Entries"][: rule.entries], data["Entries"][rule.entries :]
    sender = bool(rule.extra.get("SenderFault", False))  # True: SQS will not take it again
    failed = [
        {"Id": e["Id"], "SenderFault": sender, "Code": rule.code, "Message": "injected"}
        for e in dropped
    ]
    result: dict[str, Any] = {"Successful": [], "Failed": failed}
    if kept:
        status, _, payload = await forward(request, json.dumps({**data, "Entries": kept}).encode())
        if status != 200:
            return web.Response(status=status, body=payload)
        upstream = json.loads(payload)
        result["Successful"] = upstream.get("Successful", [])
        result["Failed"] += upstream.get("Failed", [])
    return web.json_response(result, content_type="application/x-amz-json-1.0")
