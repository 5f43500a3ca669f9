"""Every operator action is a dry run unless confirmed (issue 29, item 7): without `--yes`,
`parked replay` (to the DLQ and to the target), `parked purge` and `restore` print their plan
and change nothing — no message sent, deleted or moved, no backup or journal written, no target
called, no table written — on a queue that has messages to act on."""

from __future__ import annotations

import re

import pytest

from tests.helpers import depth, wait_for
from tests.test_operator_loop import Cli
from tests.test_operator_safety import _park, _tree, _visible
from worker.emulator import create_queue

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.timeout(180)]

# What a dry run may ask of AWS: reads, and the visibility changes that release what a read
# held. Anything else (a send, a delete, a tag, a target call, a table write) is a change.
READS = {
    ("sqs", "GetQueueUrl"),
    ("sqs", "GetQueueAttributes"),
    ("sqs", "ListQueueTags"),
    ("sqs", "ListDeadLetterSourceQueues"),
    ("sqs", "ReceiveMessage"),
    ("sqs", "ChangeMessageVisibilityBatch"),
}

DRY_RUNS = {
    "replay to the dlq": ("parked", "replay", "orders"),
    "replay to the target": ("parked", "replay", "orders", "--to", "target"),
    "purge": ("parked", "purge", "orders"),
    "restore": ("restore", "export.jsonl", "--to", "orders-dlq"),
}


@pytest.mark.parametrize("action", list(DRY_RUNS))
async def test_without_yes_nothing_changes(aws, proxy, tmp_path, action):
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parking = await create_queue(aws.sqs, "parked")
    out = await create_queue(aws.sqs, "out")
    await _park(aws, parking, dlq, 12)
    cli = Cli(tmp_path, _tree(proxy.url))
    exported = await cli("parked", "export", "orders", "--out", "export.jsonl")
    assert exported.returncode == 0, exported.stderr
    await wait_for(lambda: _visible(aws, parking, 12), timeout=30)
    before = sorted(p.name for p in tmp_path.iterdir())
    proxy.clear()

    dry = await cli(*DRY_RUNS[action])

    assert dry.returncode == 0, dry.stdout + dry.stderr
    plan, *_, last = dry.stdout.splitlines()
    assert re.search(r"\b12 (parked )?messages\b", plan), plan  # it counts what it would touch
    assert last == "dry run: nothing changed; add --yes to act"
    with proxy._lock:
        asked = set(proxy.calls)
    assert asked - READS == set()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no backup, no journal
    await wait_for(lambda: _visible(aws, parking, 12), timeout=30)
    assert await depth(aws.sqs, dlq) == 0
    assert await depth(aws.sqs, out) == 0
