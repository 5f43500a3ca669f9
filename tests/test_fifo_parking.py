"""A FIFO parking queue: the operator commands see every parked message, or say they could
not (issue 18, defect 4)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import run_until
from tests.test_explain import _cli
from worker.emulator import create_function, create_queue

pytestmark = pytest.mark.anyio

PARK_ALL = [{"when": "`true`", "action": "park", "reason": "held"}]


async def _park(aws, proxy, worker_stack, dlq_name: str, bodies: list[dict]):
    await create_function(aws.lambda_, "orders")
    fifo = dlq_name.endswith(".fifo")
    dlq = await create_queue(aws.sqs, dlq_name, **({"FifoQueue": "true"} if fifo else {}))
    await create_queue(aws.sqs, "parked.fifo", FifoQueue="true")
    queue = {
        "name": dlq_name,
        "target": {"kind": "lambda", "function": "orders"},
        "rules": PARK_ALL,
        "policy": {"parking_queue": "parked.fifo"},
    }
    settings = make_settings(proxy.url, {"orders": queue})
    worker = Worker(settings, worker_stack)
    poller = await worker.poller("orders")
    for i, body in enumerate(bodies):
        extra = {"MessageGroupId": "g", "MessageDeduplicationId": str(i)} if fifo else {}
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(body), **extra)
    await run_until(poller, lambda: worker.settled("orders", "parked") == len(bodies), 60)
    return settings


@pytest.mark.slow  # seconds of real waiting: make test, not make unit
async def test_every_message_parked_from_a_standard_dlq_is_seen(aws, proxy, worker_stack, tmp_path):
    """Parked under one shared group, SQS returned nothing more of it while the first batch
    was held: `summary` counted 10 of 25 and `purge` stopped early."""
    settings = await _park(aws, proxy, worker_stack, "orders-dlq", [{"n": i} for i in range(25)])
    cli = _cli(tmp_path, settings.model_dump(mode="json"))

    summary = await cli.json("parked", "summary", "orders")
    assert summary["total"] == 25
    purged = await cli("parked", "purge", "orders", "--yes", "--backup", str(tmp_path / "b"))
    assert purged.returncode == 0, purged.stderr
    assert "done: 25, failed: 0" in purged.stdout


async def test_a_read_that_cannot_see_a_whole_fifo_group_says_so(
    aws, proxy, worker_stack, tmp_path
):
    settings = await _park(
        aws, proxy, worker_stack, "orders-dlq.fifo", [{"n": i} for i in range(25)]
    )
    cli = _cli(tmp_path, settings.model_dump(mode="json"))

    summary = await cli("parked", "summary", "orders", "--json")
    assert summary.returncode == 1
    assert json.loads(summary.stdout)["total"] == 10  # what it could read, and it says so
    assert "incomplete: read 10 of about 25 messages" in summary.stderr


async def test_a_replay_to_the_target_takes_a_fifo_group_in_order(
    aws, proxy, worker_stack, tmp_path
):
    from worker.emulator.proxy import Rule

    bodies = [{"n": i} for i in range(3)]
    settings = await _park(aws, proxy, worker_stack, "orders-dlq.fifo", bodies)
    cli = _cli(tmp_path, settings.model_dump(mode="json"))
    proxy.add(Rule("lambda", "Invoke", "function_error", body='"n": 1'))

    done = await cli(
        "parked", "replay", "orders", "--to", "target", "--yes", "--backup", str(tmp_path / "b")
    )
    assert done.returncode == 1
    # n=0 delivered; n=1 failed; n=2 waited behind it, never tried
    assert [json.loads(json.dumps(b))["n"] for b in proxy.requests("lambda", "Invoke")] == [0, 1]
    assert "WaitingForGroup (still parked)" in done.stdout
    assert "done: 1, failed: 2" in done.stdout
