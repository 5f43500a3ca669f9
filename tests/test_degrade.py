"""Degrade, don't stop: what a missing permission costs is accuracy, never the queue."""

from __future__ import annotations

import functools

import anyio
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import make_settings
from tests.helpers import depth, drain, wait_for
from tests.test_http import aget
from worker.daemon.app import serve
from worker.emulator import create_queue
from worker.emulator.proxy import Rule

pytestmark = pytest.mark.anyio


async def test_dlq_whose_sources_cannot_be_listed_is_served_with_a_note(aws, proxy):
    proxy.add(Rule("sqs", "ListDeadLetterSourceQueues", "error", status=403, code="AccessDenied"))
    dlq = await create_queue(aws.sqs, "orders-dlq")
    out = await create_queue(aws.sqs, "orders")
    await create_queue(aws.sqs, "parked")
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody="retry me")
    settings = make_settings(
        proxy.url,
        {"orders": {"name": "orders-dlq", "target": {"kind": "sqs", "queue": "orders"}}},
        http={"host": "127.0.0.1", "port": 0},
    )
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        runtime = await tg.start(
            functools.partial(serve, settings, stop, registry=CollectorRegistry())
        )
        base = f"http://127.0.0.1:{runtime.http_port}"
        await wait_for(lambda: _ready(base), timeout=20)
        await wait_for(lambda: _empty(aws, dlq), timeout=20)
        status, body = await aget(base + "/readyz?verbose")
        stop.set()
    assert status == 200
    assert "[!] queue orders: redrive sources unreadable (AccessDenied)" in body
    [delivered] = await drain(aws.sqs, out)
    assert delivered["Body"] == "retry me"
    assert proxy.count("sqs", "ListDeadLetterSourceQueues") == 1  # not asked again and again


async def _ready(base: str) -> bool:
    return (await aget(base + "/readyz"))[0] == 200


async def _empty(aws, url: str) -> bool:
    return await depth(aws.sqs, url) == 0
