"""Adaptive idle polling: an empty queue is checked, not long-polled, at a growing interval;
a message that arrives is delivered within the interval plus one long poll."""

from __future__ import annotations

import functools
import random
import time

import anyio
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import make_settings
from tests.helpers import depth, wait_for
from tests.test_http import aget
from worker.core.idle import EMPTY_POLLS_BEFORE_IDLE, FIRST_INTERVAL_SECONDS, IdleSchedule
from worker.daemon.app import serve
from worker.emulator import create_queue

pytestmark = pytest.mark.anyio
INTERVAL = 2.0
QUEUES = ("a", "b", "c")


def test_a_queue_goes_idle_after_empty_polls_and_backs_off_to_the_ceiling():
    schedule = IdleSchedule(300, random.Random(1))
    for _ in range(EMPTY_POLLS_BEFORE_IDLE - 1):
        schedule.received(0)
    assert not schedule.idle
    schedule.received(0)
    assert schedule.idle
    intervals = []
    for _ in range(6):
        intervals.append(schedule.pause())
        schedule.checked(0)
    bases = [FIRST_INTERVAL_SECONDS * 2**i for i in range(6)]
    for pause, base in zip(intervals, bases, strict=True):
        if base < 300:
            assert 0.75 * base <= pause <= base
        else:
            assert pause == 300  # at the ceiling: exactly 12 checks an hour
    schedule.checked(1)  # a message is waiting: long polls again
    assert not schedule.idle
    schedule.received(0)
    assert not schedule.idle


def test_an_empty_queue_at_start_up_is_idle_at_once_and_zero_turns_it_off():
    schedule = IdleSchedule(300, random.Random(1))
    schedule.checked(0, first=True)
    assert 150 <= schedule.pause() <= 300  # a random phase: queues started together spread
    schedule.checked(0)
    assert schedule.pause() == 300
    off = IdleSchedule(0, random.Random(1))
    for _ in range(10):
        off.received(0)
    assert not off.enabled
    assert not off.idle


def _calls(proxy, url: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, operation, body in list(proxy.journal):
        if isinstance(body, dict) and body.get("QueueUrl") == url:
            out[operation] = out.get(operation, 0) + 1
    return out


@pytest.mark.slow  # seconds of real waiting: make test, not make unit
async def test_idle_queues_are_checked_not_polled_and_wake_up_for_a_message(aws, proxy):
    urls = {name: await create_queue(aws.sqs, f"{name}-dlq") for name in QUEUES}
    out = await create_queue(aws.sqs, "out")
    await create_queue(aws.sqs, "parked")
    settings = make_settings(
        proxy.url,
        {n: {"name": f"{n}-dlq", "target": {"kind": "sqs", "queue": "out"}} for n in QUEUES},
        http={"host": "127.0.0.1", "port": 0},
    )
    tree = settings.model_dump(mode="json")
    for queue in tree["queues"].values():
        queue["receive"]["idle_max_interval_seconds"] = INTERVAL
    settings = type(settings)(**tree)
    stop = anyio.Event()
    registry = CollectorRegistry()
    async with anyio.create_task_group() as tg:
        runtime = await tg.start(functools.partial(serve, settings, stop, registry=registry))
        base = f"http://127.0.0.1:{runtime.http_port}"
        await wait_for(lambda: _status(base + "/readyz", 200), timeout=20)
        started = time.monotonic()
        checks = 6
        await wait_for(
            lambda: all(
                _calls(proxy, u).get("GetQueueAttributes", 0) >= checks for u in urls.values()
            ),
            timeout=60,
        )
        elapsed = time.monotonic() - started
        assert (await aget(base + "/livez"))[0] == 200
        assert (await aget(base + "/readyz"))[0] == 200
        for url in urls.values():
            calls = _calls(proxy, url)
            # only the one cheap check: no receives, no tag reads while idle
            assert set(calls) == {"GetQueueAttributes"}, calls
            # one check per interval at the ceiling (the first after a random phase)
            assert calls["GetQueueAttributes"] <= elapsed / INTERVAL + 2

        # a message after the idle period: delivered within the interval plus a long poll
        # (and a little for the emulator)
        await aws.sqs.send_message(QueueUrl=urls["a"], MessageBody="woke up")
        await wait_for(lambda: _depth_is(aws, out, 1), timeout=INTERVAL + 1 + 5)
        assert (await aget(base + "/livez"))[0] == 200
        stop.set()
    # the daemon counts its own billed requests, as the proxy saw them
    for operation in ("GetQueueAttributes", "ReceiveMessage"):
        counted = registry.get_sample_value(
            "retry_worker_aws_requests_total", {"service": "sqs", "operation": operation}
        )
        assert counted == proxy.count("sqs", operation)
    assert "ReceiveMessage" in _calls(proxy, urls["a"])
    assert "ReceiveMessage" not in _calls(proxy, urls["b"])


async def _status(url: str, expected: int) -> bool:
    return (await aget(url))[0] == expected


async def _depth_is(aws, url: str, expected: int) -> bool:
    return await depth(aws.sqs, url) == expected
