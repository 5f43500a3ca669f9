"""The worked examples of docs/decisions.md, loaded from the page and run on the emulator:
the documentation cannot rot."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from acme_hooks import downstream

from tests.conftest import Worker, make_settings
from tests.helpers import drain, run_until
from worker.emulator import create_function, create_queue
from worker.emulator.proxy import Rule
from worker.ops.iam import build_policy

pytestmark = pytest.mark.anyio

PAGE = Path(__file__).resolve().parent.parent / "docs" / "decisions.md"
EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\n```yaml\n(.*?)```", re.S)


def examples() -> dict[str, dict[str, Any]]:
    return {name: yaml.safe_load(text) for name, text in EXAMPLE.findall(PAGE.read_text())}


def test_the_page_has_its_four_examples():
    assert set(examples()) == {"high-value", "renamed-field", "ledger-hook", "lambda-hook"}


async def _worker(example: str, aws, proxy, stack) -> tuple[Worker, Any, str, str]:
    queues = examples()[example]["queues"]
    queue = queues["orders"]
    await create_function(aws.lambda_, queue["target"]["function"])
    dlq = await create_queue(aws.sqs, queue["name"])
    parked = await create_queue(aws.sqs, "parked")
    worker = Worker(make_settings(proxy.url, queues), stack)
    return worker, await worker.poller("orders"), dlq, parked


def _visibility(proxy) -> list[int]:
    return [
        e["VisibilityTimeout"]
        for body in proxy.requests("sqs", "ChangeMessageVisibilityBatch")
        for e in body["Entries"]
    ]


async def test_high_value_orders_are_parked_for_review(aws, proxy, worker_stack):
    worker, poller, dlq, parked = await _worker("high-value", aws, proxy, worker_stack)
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 1, "amount": 25000}')
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 2, "amount": 40}')

    await run_until(
        poller,
        lambda: (
            worker.settled("orders", "parked") == 1 and worker.settled("orders", "deleted") == 1
        ),
    )

    assert proxy.requests("lambda", "Invoke") == [{"order": 2, "amount": 40}]
    [message] = await drain(aws.sqs, parked)
    assert message["MessageAttributes"]["retry-worker.reason"]["StringValue"] == "manual_review"


async def test_a_renamed_field_reaches_the_new_function(aws, proxy, worker_stack):
    worker, poller, dlq, _ = await _worker("renamed-field", aws, proxy, worker_stack)
    v2 = proxy.add(Rule("lambda", "Invoke", "delay", path="/functions/orders-v2/"))
    v1 = '{"customerId": "c-1", "items": [{"sku": "a"}], "total": 3}'
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=v1)

    await run_until(poller, lambda: worker.settled("orders", "deleted") == 1)

    assert proxy.requests("lambda", "Invoke") == [
        {"customer": {"id": "c-1"}, "items": [{"sku": "a"}], "total": 3}
    ]
    assert v2.applied == 1  # the call went to v2


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    state = {"status": 503}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(state["status"])
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ACME_LEDGER_HEALTH_URL", f"http://127.0.0.1:{server.server_port}/")
    downstream.forget()
    yield state
    server.shutdown()
    server.server_close()
    downstream.forget()


async def test_the_ledger_hook_defers_while_the_ledger_is_down(aws, proxy, worker_stack, ledger):
    worker, poller, dlq, _ = await _worker("ledger-hook", aws, proxy, worker_stack)
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 1}')

    await run_until(poller, lambda: worker.settled("orders", "deferred") == 1)
    assert _visibility(proxy) == [300]
    assert proxy.count("lambda", "Invoke") == 0

    ledger["status"] = 200
    downstream.forget()
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 2}')
    await run_until(poller, lambda: worker.settled("orders", "deleted") == 1)
    assert proxy.requests("lambda", "Invoke") == [{"order": 2}]


async def test_a_lambda_decides_and_is_granted_its_invoke(aws, proxy, worker_stack):
    await create_function(aws.lambda_, "orders-decider")
    worker, poller, dlq, _ = await _worker("lambda-hook", aws, proxy, worker_stack)
    answer = {"action": "defer", "delay_seconds": 60, "reason": "wait_for_stock"}
    proxy.add(Rule("lambda", "Invoke", "answer", path="orders-decider", extra=answer))
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 1}')

    await run_until(poller, lambda: worker.settled("orders", "deferred") == 1)

    assert _visibility(proxy) == [60]
    [view] = proxy.requests("lambda", "Invoke")  # the hook's call; the target's never came
    assert view["body"] == {"order": 1}
    policy = build_policy(worker.settings, "123456789012")
    [hooks] = [s for s in policy["Statement"] if s["Sid"] == "InvokeHooks"]
    assert hooks["Resource"] == ["arn:aws:lambda:us-east-1:123456789012:function:orders-decider"]
