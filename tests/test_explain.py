"""`retry-worker explain` says what the daemon then does for the same message (SPEC.md,
Decisions): the command as a process, the daemon's poller on the emulator."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import drain
from tests.test_operator_loop import Cli
from worker.emulator import create_function, create_queue
from worker.ops.explain import _print

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
DECISIONS = {
    "rules": [
        {"when": "body.amount > `10000`", "action": "park", "reason": "manual_review"},
        {"when": "attributes.ledger == 'maintenance'", "action": "defer", "delay_seconds": 300},
    ],
    "transform": "merge(body, {replayed: `true`})",
    "hook": "tests.decision_hooks:park_vip",
}
# body, attributes
MESSAGES = [
    ('{"id": 1, "amount": 25000}', {}),
    ('{"id": 2, "customer": "vip"}', {}),
    ('{"id": 3}', {"ledger": "maintenance"}),
    ('{"id": 4, "amount": 5}', {}),
    ("not json", {}),
]


def _cli(tmp_path: Path, tree: dict[str, Any]) -> Cli:
    cli = Cli(tmp_path, tree)
    cli.env["PYTHONPATH"] = os.pathsep.join([str(ROOT), cli.env.get("PYTHONPATH", "")])
    return cli


async def _explain(cli: Cli, tmp_path: Path, index: int, body: str, attrs: dict) -> dict:
    path = tmp_path / f"body-{index}.txt"
    path.write_text(body)
    pairs = [a for name, value in attrs.items() for a in ("--attribute", f"{name}={value}")]
    return await cli.json("explain", "orders", "--body-file", str(path), *pairs)


@pytest.mark.slow  # a daemon and CLI processes: make test, not make unit
async def test_explain_matches_what_the_daemon_then_does(aws, proxy, worker_stack, tmp_path):
    await create_function(aws.lambda_, "orders")
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parked = await create_queue(aws.sqs, "parked")
    queue = {"name": "orders-dlq", "target": {"kind": "lambda", "function": "orders"}}
    settings = make_settings(proxy.url, {"orders": {**queue, **DECISIONS}})
    cli = _cli(tmp_path, settings.model_dump(mode="json"))

    said = [await _explain(cli, tmp_path, i, b, a) for i, (b, a) in enumerate(MESSAGES)]
    assert [(s["action"], s["by"]) for s in said] == [
        ("park", "rule"),
        ("park", "hook"),
        ("defer", "rule"),
        ("deliver", "transform"),
        ("park", "transform"),
    ]
    assert proxy.count("lambda", "Invoke") == 0  # explain never calls the target

    worker = Worker(settings, worker_stack)
    poller = await worker.poller("orders")
    for body, attrs in MESSAGES:
        attributes = {k: {"DataType": "String", "StringValue": v} for k, v in attrs.items()}
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody=body, MessageAttributes=attributes)
    deadline = time.monotonic() + 30
    while worker.settled("orders", "parked") + worker.settled("orders", "deleted") < 4 or (
        worker.settled("orders", "deferred") < 1
    ):
        assert time.monotonic() < deadline
        await poller.run_once()

    parked_messages = await drain(aws.sqs, parked)
    reasons = {
        m["Body"]: m["MessageAttributes"]["retry-worker.reason"]["StringValue"]
        for m in parked_messages
    }
    for (body, _), verdict in zip(MESSAGES, said, strict=True):
        if verdict["action"] == "park":
            assert reasons[body] == verdict["reason"]
    [deferred] = [
        e["VisibilityTimeout"]
        for b in proxy.requests("sqs", "ChangeMessageVisibilityBatch")
        for e in b["Entries"]
    ]
    assert deferred == said[2]["delay_seconds"] == 300
    delivered = [r for r in proxy.requests("lambda", "Invoke")]
    assert delivered == [json.loads(said[3]["payload"])]

    # A parked message, explained from the parking queue: its original body and attributes.
    for message in parked_messages:
        await aws.sqs.send_message(
            QueueUrl=parked,
            MessageBody=message["Body"],
            MessageAttributes=message["MessageAttributes"],
        )
    listed = [
        json.loads(line)
        for line in (await cli("parked", "list", "orders", "--json")).stdout.splitlines()
    ]
    [big] = [p for p in listed if p["reason"] == "manual_review"]
    again = await cli.json("explain", "orders", "--parked-id", big["id"])
    assert (again["action"], again["reason"]) == ("park", "manual_review")
    assert again["view"]["body"] == {"id": 1, "amount": 25000}
    text = await cli("explain", "orders", "--parked-id", big["id"])
    assert "final: park (by rule), reason manual_review, error Rule.0" in text.stdout


async def test_explain_takes_the_attempt_and_says_bad_input(tmp_path):
    queue = {"name": "orders-dlq", "target": {"kind": "lambda", "function": "orders"}}
    settings = make_settings("http://127.0.0.1:9", {"orders": {**queue, **DECISIONS}})
    cli = _cli(tmp_path, settings.model_dump(mode="json"))
    body = tmp_path / "b.json"
    body.write_text('{"id": 5}')

    last = await cli.json("explain", "orders", "--body-file", str(body), "--attempt", "6")
    assert (last["action"], last["reason"], last["by"]) == ("park", "max_attempts", "default")
    plain = await cli("explain", "orders", "--body-file", str(body))
    assert plain.returncode == 0
    assert "rule [0] body.amount > `10000` -> park: no match" in plain.stdout
    assert 'final: deliver (by transform), payload {"id":5,"replayed":true}' in plain.stdout

    missing = await cli("explain", "orders", "--body-file", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert "nope" in missing.stderr
    unknown = await cli("explain", "shipping", "--body-file", str(body))
    assert unknown.returncode == 2
    assert "not a configured queue" in unknown.stderr


def test_explain_never_prints_a_control_character_from_the_message():
    """A body may hold a carriage return or a C1 control (SQS takes both): printed raw, it
    rewrote the operator's terminal line, the verdict included. They are shown escaped."""
    body = '{"id": 1}\r' + "final: park (by rule), reason fraud\x9b2K"
    result = {
        "queue": "orders",
        "parked": {"reason": "max_attempts", "error": "E"},
        "view": {"note": "a\x9bb"},
        "rules": [{"index": 0, "when": "note == 'x\r'", "action": "park", "matched": True}],
        "transform": {"expression": "id", "payload": "\x1b[2J"},
        "hook": None,
        "action": "deliver",
        "by": "default",
        "payload": body,
    }
    queue = SimpleNamespace(target=SimpleNamespace(kind="lambda"), rules=[])
    out = io.StringIO()
    _print(result, queue, out)
    printed = out.getvalue()
    assert not {"\r", "\x9b", "\x1b"} & set(printed), printed
    assert 'payload {"id": 1}\\rfinal: park' in printed
