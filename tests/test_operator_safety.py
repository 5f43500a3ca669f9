"""The operator commands' safety rules, one at a time: filters, Ctrl-C, the operator's policy,
and reading a large parking queue with bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from tests.conftest import make_settings
from tests.helpers import depth, drain, wait_for
from tests.test_operator_loop import Cli
from worker.core.envelope import DlqMessage
from worker.core.parking import ParkedView, build_parked, parking_metadata
from worker.emulator import create_queue
from worker.ops.filters import FilterError, Filters
from worker.ops.operator_iam import operator_policy

pytestmark = pytest.mark.anyio

META = parking_metadata(
    reason="max_attempts", attempts=3, error="Boom", source_queue="q", parked_at=1_780_000_000
)


def _view(body: str, **meta: str) -> ParkedView:
    return ParkedView({**META, **meta}, body, {})


def test_match_reads_json_paths_and_compares_text():
    body = json.dumps({"order": {"id": 42, "tags": ["x", "y"], "name": "a=b"}, "ok": True})
    assert Filters.build(match=["$.order.id=42"]).matches("m", _view(body))
    assert Filters.build(match=["order.tags[1]=y", "$.ok=true"]).matches("m", _view(body))
    assert Filters.build(match=["$['order'].name=a=b"]).matches("m", _view(body))
    assert not Filters.build(match=["$.order.id=43"]).matches("m", _view(body))
    assert not Filters.build(match=["$.order.missing=1"]).matches("m", _view(body))
    assert not Filters.build(match=["$.order.id=42"]).matches("m", _view("not json"))
    with pytest.raises(FilterError):
        Filters.build(match=["$.order.id"])


def test_filters_combine_and_times_need_a_zone():
    view = _view("{}", error="Throttled")
    parked_at = datetime.fromisoformat(META["parked-at"])
    assert parked_at.tzinfo == UTC
    assert Filters.build(reasons=["max_attempts"], errors=["Throttled"]).matches("m", view)
    assert not Filters.build(reasons=["max_attempts"], errors=["Boom"]).matches("m", view)
    assert Filters.build(parked_after="2020-01-01T00:00:00Z").matches("m", view)
    assert not Filters.build(parked_before="2020-01-01T00:00:00Z").matches("m", view)
    assert Filters.build(ids=["m"]).matches("m", view)
    assert not Filters.build(ids=["other"]).matches("m", view)
    assert Filters.build(limit=3).selects_all
    assert not Filters.build(body_contains="").selects_all
    with pytest.raises(FilterError):
        Filters.build(parked_before="2020-01-01T00:00:00")


def test_operator_policy_grants_the_commands_and_nothing_of_the_daemon():
    settings = make_settings(
        "http://127.0.0.1:1",
        {"orders": {"name": "orders-dlq", "target": {"kind": "lambda", "function": "fn"}}},
    )
    policy = operator_policy(settings, "123456789012")
    grants = {(a, r) for s in policy["Statement"] for a in s["Action"] for r in s["Resource"]}
    dlq = "arn:aws:sqs:us-east-1:123456789012:orders-dlq"
    parked = "arn:aws:sqs:us-east-1:123456789012:parked"
    assert {("sqs:TagQueue", dlq), ("sqs:UntagQueue", dlq), ("sqs:SendMessage", dlq)} <= grants
    assert {("sqs:ReceiveMessage", parked), ("sqs:DeleteMessage", parked)} <= grants
    assert ("sqs:ReceiveMessage", dlq) not in grants, "reading a DLQ would cost attempts"
    assert ("sqs:DeleteMessage", dlq) not in grants
    assert ("lambda:InvokeFunction", "arn:aws:lambda:us-east-1:123456789012:function:fn") in grants


def test_iam_policy_operator_command_prints_it(tmp_path):
    cli = Cli(tmp_path, _tree("http://127.0.0.1:1"))
    command = [sys.executable, "-m", "worker", "iam-policy", "--operator", "--account-id", "1"]
    result = subprocess.run(
        [*command, "--config", str(cli.config)],
        capture_output=True,
        text=True,
        env={**cli.env, "RETRY_WORKER_CONFIG_DIR": str(tmp_path)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    actions = {a for s in json.loads(result.stdout)["Statement"] for a in s["Action"]}
    assert "sqs:TagQueue" in actions


def _tree(endpoint: str) -> dict:
    settings = make_settings(
        endpoint, {"orders": {"name": "orders-dlq", "target": {"kind": "sqs", "queue": "out"}}}
    )
    return settings.model_dump(mode="json")


async def _park(aws, parking: str, dlq_url: str, count: int, first: int = 0, **meta: str) -> None:
    for start in range(first, first + count, 10):
        entries = []
        for i in range(start, min(first + count, start + 10)):
            message = DlqMessage(f"m{i}", "r", json.dumps({"n": i}))
            parked = build_parked(message, {**META, "source-queue": dlq_url, **meta})
            assert parked is not None
            entry = {
                "Id": str(i),
                "MessageBody": parked.body,
                "MessageAttributes": parked.attributes,
            }
            entries.append(entry)
        await aws.sqs.send_message_batch(QueueUrl=parking, Entries=entries)


@pytest.mark.slow
async def test_ctrl_c_leaves_every_message_in_exactly_one_place(aws, proxy, tmp_path):
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parking = await create_queue(aws.sqs, "parked")
    await _park(aws, parking, dlq, 30)
    cli = Cli(tmp_path, _tree(proxy.url))
    backup = tmp_path / "b.jsonl"
    code, out, err = await cli.interrupted(
        lambda: backup.exists() and len(backup.read_text().splitlines()) >= 4,
        *("parked", "replay", "orders", "--yes", "--rate", "2", "--backup", "b.jsonl"),
    )
    assert code == 0, out + err
    in_dlq = {json.loads(m["Body"])["n"] for m in await drain(aws.sqs, dlq)}
    parked_ns = {json.loads(m["Body"])["n"] for m in await drain(aws.sqs, parking)}
    assert in_dlq, "some were moved before Ctrl-C"
    assert parked_ns, "Ctrl-C stopped it before the end"
    assert not in_dlq & parked_ns, "no message in both places"
    assert in_dlq | parked_ns == set(range(30)), "and none lost"
    backed_up = {
        json.loads(json.loads(line)["body"])["n"] for line in backup.read_text().splitlines()
    }
    assert in_dlq <= backed_up, "everything moved was backed up first"
    assert f"done: {len(in_dlq)}, failed: 0" in out


@pytest.mark.slow
async def test_reading_a_large_parking_queue_releases_what_it_did_not_take(aws, proxy, tmp_path):
    dlq = await create_queue(aws.sqs, "orders-dlq")
    other = await create_queue(aws.sqs, "billing-dlq")
    parking = await create_queue(aws.sqs, "parked")
    await _park(aws, parking, dlq, 150)
    await _park(aws, parking, other, 50)  # another queue's, in the same parking queue
    cli = Cli(tmp_path, _tree(proxy.url))
    summary = await cli.json("parked", "summary", "orders")
    assert summary["total"] == 150
    listed = await cli("parked", "list", "orders", "--limit", "7")
    assert len(listed.stdout.splitlines()) == 7
    # not a terminal: plain progress lines, no bar redrawn in place
    assert "list orders" in listed.stderr
    assert "read=" in listed.stderr
    assert "\r" not in listed.stderr
    export = await cli("parked", "export", "orders", "--reason", "max_attempts", "--out", "e.jsonl")
    assert export.returncode == 0, export.stderr
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 150
    # all read, all released: every message is visible again right away
    await wait_for(lambda: _visible(aws, parking, 200), timeout=10)
    assert await depth(aws.sqs, dlq) == 0


async def _visible(aws, url: str, expected: int) -> bool:
    attrs = await aws.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"]) == expected


def test_progress_redraws_a_bar_on_a_terminal_and_writes_lines_otherwise():
    import io

    from worker.ops.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    now = [0.0]
    tty, plain = Terminal(), io.StringIO()
    for stream in (tty, plain):
        progress = Progress(stream, "replay orders", 100, clock=lambda: now[0])
        for read in (10, 50, 100):
            now[0] += 10
            progress.update(read=read)
        progress.finish()
    assert tty.getvalue().count("\r") == 4
    assert "[###############...............] 50/~100" in tty.getvalue()
    assert "\r" not in plain.getvalue()
    assert len(plain.getvalue().splitlines()) == 4
