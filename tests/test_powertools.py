"""A real consumer: the Powertools handler of docs/how-it-works.md, taken from the page, behind a local Lambda
endpoint that passes on the daemon's client context, its idempotency table on the emulator.
The daemon delivers one message twice (its delete fails, so it comes back); the side effect
happens once (SPEC.md, Idempotency)."""

from __future__ import annotations

import base64
import json
import re
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from aiohttp import web

from tests.conftest import Worker, make_settings
from tests.helpers import depth, free_port, run_until
from worker.emulator import create_queue
from worker.emulator.proxy import Rule

pytestmark = pytest.mark.anyio

PAGE = Path(__file__).resolve().parent.parent / "docs" / "how-it-works.md"


def readme_handler(shipped: list[dict[str, Any]]) -> dict[str, Any]:
    """The handler block of docs/how-it-works.md, run as a module whose `ship` records the
    effect."""
    text = PAGE.read_text(encoding="utf-8")
    start = text.index("A Python Lambda target deduplicates with Powertools")
    [code] = re.findall(r"```python\n(.*?)```", text[start:], re.S)[:1]
    namespace: dict[str, Any] = {"ship": shipped.append, "__name__": "readme_handler"}
    exec(compile(code, "docs/how-it-works.md", "exec"), namespace)  # noqa: S102 - the page's own code
    return namespace


class LocalLambda:
    """Invoke, as Lambda's API answers it, running a Python handler with a context that
    carries the client context the caller sent."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.contexts: list[Any] = []

    async def invoke(self, request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        header = request.headers.get("X-Amz-Client-Context")
        client = None
        if header:
            custom = json.loads(base64.b64decode(header)).get("custom")
            client = SimpleNamespace(custom=custom, client=None, env=None)
        context = SimpleNamespace(
            aws_request_id=str(uuid.uuid4()),
            function_name=request.match_info["name"],
            invoked_function_arn=f"arn:aws:lambda:us-east-1:123456789012:function:{request.match_info['name']}",
            memory_limit_in_mb=128,
            client_context=client,
            get_remaining_time_in_millis=lambda: 60_000,
        )
        self.contexts.append(context)
        result = await anyio.to_thread.run_sync(self.handler, event, context)
        return web.json_response(result)


async def test_the_readme_handler_runs_its_side_effect_once(aws, proxy, worker_stack, monkeypatch):
    dynamodb = await aws.client("dynamodb")
    await dynamodb.create_table(
        TableName="orders-idempotency",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", aws.url)  # the handler's boto3 client
    shipped: list[dict[str, Any]] = []
    module = readme_handler(shipped)
    local = LocalLambda(module["handler"])
    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{name}/invocations", local.invoke)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        dlq = await create_queue(aws.sqs, "orders-dlq")
        await create_queue(aws.sqs, "parked")
        queue = {
            "name": "orders-dlq",
            "target": {"kind": "lambda", "function": "orders"},
            "receive": {"visibility_timeout_seconds": 2, "wait_seconds": 1},
        }
        settings = make_settings(
            proxy.url,
            {"orders": queue},
            aws={"endpoint_urls": {"lambda": f"http://127.0.0.1:{port}"}},
        )
        worker = Worker(settings, worker_stack)
        poller = await worker.poller("orders")
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody='{"id": "o-1"}')
        # The first delete fails (after its retries): the message comes back, delivered again.
        proxy.add(Rule("sqs", "DeleteMessageBatch", "error", status=500, times=3))

        await run_until(poller, lambda: worker.settled("orders", "deleted") == 2, timeout=60)
    finally:
        await runner.cleanup()

    assert len(local.contexts) == 2  # delivered twice...
    keys = {c.client_context.custom["retry-worker"]["idempotency_key"] for c in local.contexts}
    assert len(keys) == 1  # ...under one key...
    assert shipped == [{"id": "o-1"}]  # ...and shipped once
    assert await depth(aws.sqs, dlq) == 0
