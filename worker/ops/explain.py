"""`retry-worker explain`: what a queue's rules, transform and hook decide for one message —
the daemon's own decider and policy, never the target (SPEC.md, Decisions).

The message comes from a file (`--body-file`, with `--attribute NAME=VALUE`) or from the
parking queue (`--parked-id`: its original body and attributes, as a replay would send them;
read, then released at once). A Python hook runs and a Lambda hook is invoked: they decide,
they are not the target.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from typing import Any, TextIO

import anyio

from worker.aws.clients import Clients
from worker.core.envelope import DlqMessage
from worker.core.outcomes import Park, Retry
from worker.core.policy import gate
from worker.decisions.decider import Decider, Trace, build_hook
from worker.decisions.verdicts import settled_as
from worker.hooks import Defer
from worker.ops.context import ContextError, configured, open_queue
from worker.ops.filters import Filters
from worker.ops.reading import selected
from worker.ops.scan import QueueReader
from worker.ops.tally import shown
from worker.settings import QueueSettings, Settings


def _attributes(pairs: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ContextError(f"--attribute {pair!r}: expected NAME=VALUE")
        out[name] = {"DataType": "String", "StringValue": value}
    return out


PARKED_FIELDS = ("reason", "error", "error-type", "error-message", "attempts", "parked-at")


async def _parked_message(
    settings: Settings, queue: str, message_id: str, clients: Clients
) -> tuple[DlqMessage, dict[str, str]]:
    """The parked message's original, and why it was parked (PARKED_FIELDS of its metadata)."""
    ctx = await open_queue(settings, queue, clients)
    async with QueueReader(ctx.parking) as reader:
        async for batch in selected(reader, ctx, Filters.build(ids=[message_id], limit=1)):
            for record in batch:
                reader.keep(record)  # explaining changes nothing
                meta = record.view.meta if record.view is not None else {}
                why = {key: meta[key] for key in PARKED_FIELDS if key in meta}
                return record.original(sent_at=time.time()), why
    raise ContextError(f"--parked-id {message_id}: not among the parked messages of {queue}")


async def _message(
    args: argparse.Namespace, settings: Settings, clients: Clients
) -> tuple[DlqMessage, dict[str, str] | None]:
    """The message to explain, and why it was parked when it is a parked one."""
    if args.parked_id:
        message, why = await _parked_message(settings, args.queue, args.parked_id, clients)
        attributes = {**message.attributes, **_attributes(args.attribute)}
        message = dataclasses.replace(message, attributes=attributes, receive_count=args.attempt)
        return message, why
    try:
        body = await anyio.Path(args.body_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ContextError(f"--body-file {args.body_file}: {exc.strerror}") from exc
    message = DlqMessage(
        "explain",
        "",
        body,
        attributes=_attributes(args.attribute),
        receive_count=args.attempt,
        sent_at=time.time(),
    )
    return message, None


async def explain(
    args: argparse.Namespace, settings: Settings, clients: Clients, out: TextIO
) -> int:
    name, queue = configured(settings, args.queue)
    message, why = await _message(args, settings, clients)
    now = time.time()
    attempt = args.attempt
    # the queue's Lambda hook is asked where the daemon asks it: the queue's account and region
    decider = Decider(name, queue, await build_hook(queue, clients.of(queue)))
    trace = Trace()
    result: dict[str, Any] = {"queue": name}
    if why is not None:
        result["parked"] = {key.replace("-", "_"): value for key, value in why.items()}
    gated = gate(message, attempt, queue.policy, now)
    if gated is not None:  # past the policy's limits: parked before any decision
        trace.view = decider.view(message, attempt, now)
        result.update(action="park", by="default", reason=gated.reason, error=gated.error)
    else:
        verdict = await decider.decide(decider.view(message, attempt, now), trace)
        result.update(by=verdict.by, rule=verdict.rule)
        settled = settled_as(verdict, attempt, message, queue.policy, now, random.Random())
        match settled:
            case None:
                payload = verdict.payload if verdict.payload is not None else trace.view["text"]
                result.update(action="deliver", payload=payload)
            case (_, Park(reason=reason, error=error)):
                result.update(action="park", reason=reason, error=error)
            case (_, Retry(delay=delay, error=error)):
                reason = verdict.decision.reason if isinstance(verdict.decision, Defer) else error
                result.update(action="defer", reason=reason, delay_seconds=delay, error=error)
    decider.close()
    result.update(view=trace.view, rules=trace.rules, transform=trace.transform, hook=trace.hook)
    if args.json:
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
    else:
        _print(result, queue, out)
    return 0


def _print_parked(parked: dict[str, str], out: TextIO) -> None:
    line = f"parked: reason {shown(parked.get('reason'))}, error {shown(parked.get('error'))}"
    if "error_type" in parked:
        line += f", type {shown(parked['error_type'])}"
    out.write(line + "\n")
    if "error_message" in parked:
        out.write(f"  the target said: {shown(parked['error_message'])}\n")


def _print(result: dict[str, Any], queue: QueueSettings, out: TextIO) -> None:
    out.write(f"queue {result['queue']} (target {queue.target.kind})\n")
    if (parked := result.get("parked")) is not None:
        _print_parked(parked, out)
    out.write("view:\n")
    for line in json.dumps(result["view"], indent=2, ensure_ascii=False).splitlines():
        out.write(f"  {shown(line)}\n")
    for rule in result["rules"]:
        found = rule.get("error") or ("matched" if rule.get("matched") else "no match")
        label = f"{rule['index']} {rule['name']}" if rule.get("name") else rule["index"]
        said = f"{rule['when']} -> {rule.get('action', '?')}: {found}"
        out.write(f"rule [{shown(label)}] {shown(said)}\n")
    if not result["rules"] and queue.rules:
        out.write("rules: not evaluated\n")
    if (transform := result["transform"]) is not None:
        found = transform.get("error") or transform.get("payload")
        out.write(f"transform {shown(transform['expression'])} -> {shown(found)}\n")
    if (hook := result["hook"]) is not None:
        found = hook.get("error") or json.dumps(hook.get("decision"))
        out.write(f"hook {hook['name']} -> {shown(found)}\n")
    line = f"final: {result['action']} (by {result['by']})"
    if result["action"] == "park":
        line += f", reason {result['reason']}, error {shown(result['error'])}"
    elif result["action"] == "defer":
        line += f", {result['delay_seconds']:g} s ({result['reason']})"
    else:
        line += f", payload {shown(result['payload'])}"
    out.write(line + "\n")
