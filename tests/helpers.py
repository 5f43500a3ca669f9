"""Small helpers shared by the tests: reading queues, waiting on conditions with deadlines."""

from __future__ import annotations

import inspect
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio


async def drain(
    sqs: Any, url: str, *, visibility: int = 60, delete: bool = False
) -> list[dict[str, Any]]:
    """Every message currently visible in a queue (received, left invisible; with `delete`,
    deleted as read — a FIFO queue returns no more of a group while one is in flight)."""
    out: list[dict[str, Any]] = []
    while True:
        response = await sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=visibility,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        batch = response.get("Messages", [])
        if not batch:
            return out
        out.extend(batch)
        if delete:
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ]
            await sqs.delete_message_batch(QueueUrl=url, Entries=entries)


async def depth(sqs: Any, url: str) -> int:
    """Visible plus in-flight plus delayed messages."""
    attrs = (
        await sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 30, interval: float = 0.05
) -> None:
    """Poll `condition` (plain or async) until it holds; fail the test at the deadline."""
    deadline = time.monotonic() + timeout

    async def holds() -> bool:
        result = condition()
        return await result if inspect.isawaitable(result) else bool(result)

    while not await holds():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await anyio.sleep(interval)


def free_port() -> int:
    """A free loopback port (for a daemon's HTTP server or a scraper)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_until(poller: Any, predicate: Callable[[], bool], timeout: float = 30) -> None:
    """Run the poller's receive cycles until `predicate` holds; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await poller.run_once()
