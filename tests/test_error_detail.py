"""What the target said is kept through parking (SPEC.md, Error detail): a Lambda function's
own errorType and errorMessage, an AWS exception's message, a batch entry's message; summary,
list, the filter, explain and the console all show it."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack

import anyio
import pytest

from tests.conftest import Aws, Worker, make_settings
from tests.console_client import browser, running_console
from tests.helpers import drain, run_until
from tests.test_operator_loop import Cli
from worker.core.limits import SQS_MAX_MESSAGE_BYTES, message_size
from worker.core.parking import read_parked
from worker.emulator import create_function, create_queue
from worker.emulator.proxy import FaultProxy, Rule
from worker.settings import Settings

pytestmark = pytest.mark.anyio

TEN = {f"a{i}": {"DataType": "String", "StringValue": f"v{i}"} for i in range(10)}
HUGE_MESSAGE = "x" * 100_000


def _said(kind: str, message: str) -> dict[str, str]:
    return {"errorType": kind, "errorMessage": message}


async def _orders(aws: Aws, proxy: FaultProxy, stack: AsyncExitStack) -> tuple:
    """The `orders` DLQ, its Lambda target and parking queue; one attempt, then parked."""
    await create_function(aws.lambda_, "orders")
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parked = await create_queue(aws.sqs, "parked")
    queue = {
        "name": "orders-dlq",
        "target": {"kind": "lambda", "function": "orders"},
        "policy": {"max_attempts": 1},
    }
    settings = make_settings(proxy.url, {"orders": queue})
    worker = Worker(settings, stack)
    return settings, worker, await worker.poller("orders"), dlq, parked


async def _park_three(aws: Aws, proxy: FaultProxy, stack: AsyncExitStack) -> tuple:
    """Three messages the function fails: `boom` twice (one with ten attributes), and one of
    nearly 256 KiB whose function fails with a message of 100 kB."""
    settings, worker, poller, dlq, parked = await _orders(aws, proxy, stack)
    proxy.add(
        Rule("lambda", "Invoke", "function_error", body="big", extra=_said("Huge", HUGE_MESSAGE))
    )
    proxy.add(Rule("lambda", "Invoke", "function_error", extra=_said("Boom", "boom: order 42")))
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 1}')
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"order": 2}', MessageAttributes=TEN)
    big = json.dumps({"big": "y" * (SQS_MAX_MESSAGE_BYTES - 2_000)})
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=big)
    await run_until(poller, lambda: worker.settled("orders", "parked") == 3)
    return settings, parked


async def test_a_parked_message_keeps_what_the_function_said(aws, proxy, worker_stack, tmp_path):
    settings, parked = await _park_three(aws, proxy, worker_stack)
    messages = await drain(aws.sqs, parked)
    views = {}
    for m in messages:
        view = read_parked(m["Body"], m.get("MessageAttributes", {}))
        assert view is not None
        views[json.loads(view.body).get("order", "big")] = (m, view)

    plain, view = views[1]
    attributes = {k: v["StringValue"] for k, v in plain["MessageAttributes"].items()}
    assert attributes["retry-worker.error"] == "FunctionError.Unhandled"
    assert attributes["retry-worker.error-type"] == "Boom"
    assert attributes["retry-worker.error-message"] == "boom: order 42"

    # Ten attributes of its own: ours go in `meta` (the envelope form), its ten all kept.
    ten, view = views[2]
    assert set(ten["MessageAttributes"]) == {"retry-worker.meta"}
    assert view.attributes == TEN
    assert (view.meta["error-type"], view.meta["error-message"]) == ("Boom", "boom: order 42")

    # 100 kB said of a message near the limit: cut to 1 KiB, and the message still parked.
    big, view = views["big"]
    assert view.meta["error-type"] == "Huge"
    said = view.meta["error-message"]
    assert said == "x" * (1024 - 3) + "…"  # 1 KiB of UTF-8, the ellipsis counted
    assert message_size(big["Body"], big.get("MessageAttributes", {})) <= SQS_MAX_MESSAGE_BYTES

    # Put back, for the operator's commands to read.
    for m in messages:
        await aws.sqs.send_message(
            QueueUrl=parked, MessageBody=m["Body"], MessageAttributes=m["MessageAttributes"]
        )
    await _operator_sees_it(settings, tmp_path)
    await _console_sees_it(settings)


async def _operator_sees_it(settings: Settings, tmp_path) -> None:
    cli = Cli(tmp_path, settings.model_dump(mode="json"))
    summary = await cli.json("parked", "summary", "orders")
    assert summary["by_error_type"] == {"Boom": 2, "Huge": 1}
    assert summary["by_error"] == {"FunctionError.Unhandled": 3}
    listed = (await cli("parked", "list", "orders", "--error-type", "Boom", "--json")).stdout
    rows = [json.loads(line) for line in listed.splitlines()]
    assert [(r["error_type"], r["error_message"]) for r in rows] == [("Boom", "boom: order 42")] * 2
    text = (await cli("parked", "list", "orders", "--error-type", "Huge")).stdout
    [line] = text.splitlines()
    assert " FunctionError.Unhandled Huge 1 " in line
    explained = await cli("explain", "orders", "--parked-id", rows[0]["id"])
    assert (
        "parked: reason max_attempts, error FunctionError.Unhandled, type Boom" in explained.stdout
    )
    assert "the target said: boom: order 42" in explained.stdout


async def _console_sees_it(settings: Settings) -> None:
    async with running_console(settings) as (url, _), browser(url) as console:
        with anyio.fail_after(30):
            page = await console.get("/queues/orders")
            while "Reading the parking queue" in page.text:
                await anyio.sleep(0.1)
                page = await console.get("/queues/orders")
        groups = page.element("by-error-type")
        assert "Boom 2 boom: order 42" in groups
        assert "Huge 1 xxxx" in groups
        assert "boom: order 42" in page.element("messages")
        only = await console.get("/queues/orders?error_type=Huge")
        assert "1 matching message" in only.text


async def test_what_a_target_says_is_cleaned_before_it_is_kept(aws, proxy, worker_stack):
    """Half a surrogate pair (it cannot be encoded: the whole settle failed, and every
    batch-mate with it), an ANSI escape and NUL (real SQS refuses them in an attribute; the
    emulator does not check), a type of 300 kB (it would be logged and digested whole): kept
    as U+FFFD, the type cut to 256 characters; the batch-mate is delivered and deleted."""
    _, worker, poller, dlq, parked = await _orders(aws, proxy, worker_stack)
    bad = {"errorType": "T" * 300_000, "errorMessage": "half \ud800 \x1b[31mred\x1b[0m \x00 end"}
    proxy.add(Rule("lambda", "Invoke", "function_error", body="bad", extra=bad))
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"bad": true}')
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"good": true}')

    await run_until(poller, lambda: worker.settled("orders", "parked") == 1)

    assert worker.settled("orders", "deleted") == 1
    [message] = await drain(aws.sqs, parked)
    said = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert said["retry-worker.error-type"] == "T" * 256
    assert said["retry-worker.error-message"] == "half \ufffd \ufffd[31mred\ufffd[0m \ufffd end"
