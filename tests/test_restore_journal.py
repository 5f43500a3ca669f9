"""`restore` runs again after a partial failure without sending twice what it sent: a journal
beside the file (issue 18)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import make_settings
from tests.helpers import drain
from tests.test_explain import _cli
from worker.emulator import create_queue
from worker.emulator.proxy import Rule

pytestmark = pytest.mark.anyio


async def test_a_restore_run_again_sends_only_what_was_not_sent(aws, proxy, tmp_path):
    out = await create_queue(aws.sqs, "restored")
    backup = tmp_path / "backup.jsonl"
    lines = [
        {"message_id": f"m{i}", "group_id": None, "body": f"body {i}", "attributes": {}}
        for i in range(12)
    ]
    backup.write_text("".join(json.dumps(line) + "\n" for line in lines))
    queue = {"name": "orders-dlq", "target": {"kind": "sqs", "queue": "restored"}}
    cli = _cli(tmp_path, make_settings(proxy.url, {"orders": queue}).model_dump(mode="json"))
    # Two entries of the first request are refused (a sender fault: not retried).
    proxy.add(
        Rule(
            "sqs",
            "SendMessageBatch",
            "fail_entries",
            entries=2,
            code="InvalidParameterValue",
            times=1,
        )
    )

    # one lane: the first request is the file's first ten
    first = await cli("restore", str(backup), "--to", "restored", "--yes", "--parallel", "1")
    assert first.returncode == 1
    assert "restored 10 messages" in first.stdout
    plan = await cli("restore", str(backup), "--to", "restored")
    assert "plan: restore 2 messages" in plan.stdout  # the rest was sent
    second = await cli("restore", str(backup), "--to", "restored", "--yes")
    assert second.returncode == 0, second.stderr
    assert "restored 2 messages" in second.stdout

    bodies = sorted(m["Body"] for m in await drain(aws.sqs, out))
    assert bodies == sorted(f"body {i}" for i in range(12))  # each once
    assert (tmp_path / "backup.jsonl.sent-to-restored").exists()
