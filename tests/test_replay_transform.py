"""`parked replay --transform`: the payload fixed on the way back, the backup keeping the
original, `--to target` skipping the queue's rules (SPEC.md, Decisions)."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import Worker, make_settings
from tests.helpers import depth, drain
from tests.test_explain import _cli
from worker.emulator import create_function, create_queue

pytestmark = pytest.mark.anyio

RULES = [{"when": "body.version == `1`", "action": "park", "reason": "old_version"}]


async def _parked(aws, proxy, worker_stack, tmp_path, bodies):
    await create_function(aws.lambda_, "orders")
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parked = await create_queue(aws.sqs, "parked")
    queue = {"name": "orders-dlq", "target": {"kind": "lambda", "function": "orders"}}
    settings = make_settings(proxy.url, {"orders": {**queue, "rules": RULES}})
    worker = Worker(settings, worker_stack)
    poller = await worker.poller("orders")
    for body in bodies:
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody=body)
    deadline = time.monotonic() + 30
    while worker.settled("orders", "parked") < len(bodies):
        assert time.monotonic() < deadline
        await poller.run_once()
    return _cli(tmp_path, settings.model_dump(mode="json")), dlq, parked


@pytest.mark.slow  # seconds of real waiting: make test, not make unit
async def test_replay_to_the_target_delivers_the_fixed_payload(aws, proxy, worker_stack, tmp_path):
    bodies = ['{"id": 1, "version": 1}', '{"id": 2, "version": 1}']
    cli, _dlq, parked = await _parked(aws, proxy, worker_stack, tmp_path, bodies)
    transform = "merge(body, {version: `2`})"

    plan = await cli("parked", "replay", "orders", "--to", "target", "--transform", transform)
    assert plan.returncode == 0, plan.stderr
    assert 'first match before: {"id": ' in plan.stdout
    assert '"version":2}' in plan.stdout.split("first match after:")[1]
    assert proxy.count("lambda", "Invoke") == 0

    backup = tmp_path / "backup.jsonl"
    done = await cli(
        "parked",
        "replay",
        "orders",
        "--to",
        "target",
        "--transform",
        transform,
        "--yes",
        "--backup",
        str(backup),
    )
    assert done.returncode == 0, done.stderr
    # The queue's rule would park version 1 again: the operator's replay skips it.
    assert sorted(json.dumps(b, sort_keys=True) for b in proxy.requests("lambda", "Invoke")) == [
        '{"id": 1, "version": 2}',
        '{"id": 2, "version": 2}',
    ]
    saved = [json.loads(line) for line in backup.read_text().splitlines()]
    assert sorted(s["body"] for s in saved) == sorted(bodies)  # the originals
    assert await depth(aws.sqs, parked) == 0


async def test_replay_to_the_dlq_sends_the_fixed_payload_and_keeps_failures_parked(
    aws, proxy, worker_stack, tmp_path
):
    bodies = ['{"id": 3, "version": 1}', '{"version": 1}']
    cli, dlq, parked = await _parked(aws, proxy, worker_stack, tmp_path, bodies)

    done = await cli(
        "parked",
        "replay",
        "orders",
        "--transform",
        "{order: body.id, version: `2`} | order && @",
        "--yes",
        "--backup",
        str(tmp_path / "b.jsonl"),
    )
    assert done.returncode == 1  # one message had no id: the transform gave null
    assert "TransformFailed.NullResult (still parked)" in done.stdout
    [sent] = await drain(aws.sqs, dlq)
    assert json.loads(sent["Body"]) == {"order": 3, "version": 2}
    [left] = await drain(aws.sqs, parked)
    assert left["Body"] == '{"version": 1}'


async def test_a_bad_transform_is_exit_2(tmp_path):
    queue = {"name": "orders-dlq", "target": {"kind": "lambda", "function": "orders"}}
    settings = make_settings("http://127.0.0.1:9", {"orders": queue})
    cli = _cli(tmp_path, settings.model_dump(mode="json"))
    result = await cli("parked", "replay", "orders", "--transform", "merge(body,")
    assert result.returncode == 2
    assert "--transform: not a valid JMESPath expression" in result.stderr
