"""The keeper in the daemon, killed between send and delete (issue 31): the proxy holds the
keeper's DeleteMessageBatch on the parking queue after its copies were sent, and the daemon
is SIGKILLed. Two copies of each message, none lost; the restarted daemon's keeper deletes the
old ones instead of making a third.

Real time: the parking queue keeps a message 60 s (the least SQS allows), the keeper's margin
is 30 s and it checks every 5 s, so a message is due 25 s after it was parked."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.helpers import depth, wait_for
from tests.test_chaos import start
from tests.test_keeper import _park, _parked
from worker.core.parking import read_parked
from worker.emulator import create_queue
from worker.emulator.proxy import Rule

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(240)]

MESSAGES = 6


def config(tmp_path: Path, endpoint: str) -> Path:
    tree = {
        "aws": {"endpoint_url": endpoint, "read_timeout_seconds": 60, "sdk_max_attempts": 1},
        "http": {"host": "127.0.0.1", "port": 0},
        "logging": {"format": "json"},
        "shutdown": {"grace_seconds": 2},
        "keeper": {"margin_seconds": 30, "interval_seconds": 5},
        "defaults": {"policy": {"parking_queue": "parked"}},
        "queues": {"q": {"name": "dlq", "target": {"kind": "sqs", "queue": "out"}}},
    }
    path = tmp_path / "keeper.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


async def test_a_kill_between_copy_and_delete_leaves_two_copies_and_the_next_pass_mends(
    aws, proxy, tmp_path
):
    await create_queue(aws.sqs, "dlq")
    await create_queue(aws.sqs, "out")
    parked = await create_queue(aws.sqs, "parked", MessageRetentionPeriod="60")
    await _park(aws, parked, [_parked(n) for n in range(MESSAGES)])
    hold = proxy.add(Rule("sqs", "DeleteMessageBatch", "delay", seconds=3600))
    cfg = config(tmp_path, proxy.url)

    process = start(tmp_path, cfg, 0)
    try:  # the copies were sent (the keeper deletes only after that): the delete is held
        await wait_for(lambda: hold.applied >= 1, timeout=90, interval=0.2)
        assert proxy.count("sqs", "SendMessageBatch") >= 1
        process.send_signal(signal.SIGKILL)
        assert process.wait(10) == -signal.SIGKILL
    finally:
        process.kill()
    proxy.rules.remove(hold)  # the held delete never reaches the emulator

    async def both_copies() -> bool:  # the killed pass's hold ends within its margin's quarter
        return await depth(aws.sqs, parked) == 2 * MESSAGES

    await wait_for(both_copies, timeout=30, interval=0.5)

    process = start(tmp_path, cfg, 1)
    try:

        async def mended() -> bool:
            return await depth(aws.sqs, parked) == MESSAGES

        await wait_for(mended, timeout=60, interval=0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        process.kill()
    log = (tmp_path / "run-1.log").read_text()
    passes = [json.loads(line) for line in log.splitlines() if '"keeper_pass"' in line]
    assert sum(p["mended"] for p in passes) == MESSAGES, passes  # deleted, not copied again
    got = await aws.sqs.receive_message(
        QueueUrl=parked, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )
    views = [read_parked(m["Body"], m["MessageAttributes"]) for m in got.get("Messages", [])]
    assert Counter(json.loads(v.body)["n"] for v in views if v) == Counter(range(MESSAGES))
    assert {v.meta["kept"] for v in views if v} == {"1"}
