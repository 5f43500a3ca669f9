"""The operator's reads and moves in parallel (issue 32): every safety rule holds with many
chunks in flight — each message in exactly one place under injected send and delete failures
and a Ctrl-C, a FIFO group in order, the rate counted in windows, and no more than the plan
while the daemon parks meanwhile."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import depth, drain, wait_for
from tests.test_operator_loop import Cli
from tests.test_operator_safety import META, _park, _tree
from worker.core.envelope import DlqMessage
from worker.core.parking import build_parked
from worker.emulator import create_queue
from worker.emulator.proxy import Rule

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

REFUSED_LINE = re.compile(r"^  failed (\S+): (.*) \(still parked\)$", re.M)
UNSURE_LINE = re.compile(r"^  failed (\S+): sent, but its delete", re.M)


def _ns(messages: list[dict]) -> list[int]:
    return [json.loads(m["Body"])["n"] for m in messages]


async def test_moves_under_failures_and_ctrl_c_leave_each_message_in_one_place(
    aws, proxy, tmp_path
):
    """300 parked; sends refused now and then (final: those stay parked), deletes answered
    with a reset after they happened (retried), receives failing now and then, and Ctrl-C
    while ten chunks are in flight. Afterwards each message is in the DLQ once or still
    parked, never both, none lost, everything moved was backed up first, and the command's
    own counts say exactly that."""
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parking = await create_queue(aws.sqs, "parked")
    await _park(aws, parking, dlq, 300)
    refused = Rule(
        "sqs",
        "SendMessageBatch",
        "fail_entries",
        entries=2,
        probability=0.3,
        code="InvalidParameterValue",
        extra={"SenderFault": True},
    )
    proxy.add(refused)
    proxy.add(dataclasses.replace(refused, probability=1.0, times=1))  # one surely, early
    proxy.add(Rule("sqs", "DeleteMessageBatch", "reset", after=True, probability=0.2))
    proxy.add(Rule("sqs", "ReceiveMessage", "error", code="InternalError", probability=0.1))
    cli = Cli(tmp_path, _tree(proxy.url))
    backup = tmp_path / "b.jsonl"
    code, out, err = await cli.interrupted(
        lambda: backup.exists() and len(backup.read_text().splitlines()) >= 100,
        *("parked", "replay", "orders", "--yes", "--rate", "60", "--parallel", "10"),
        *("--backup", "b.jsonl"),
    )
    assert code == 1, out + err  # some were refused
    proxy.clear()
    in_dlq = _ns(await drain(aws.sqs, dlq))
    left = await drain(aws.sqs, parking)
    parked = dict(zip((m["MessageId"] for m in left), _ns(left), strict=True))
    refusals = dict(REFUSED_LINE.findall(out))
    unsure = set(UNSURE_LINE.findall(out))  # sent; the delete's answer was lost twice
    assert refusals, "some sends were refused"
    assert set(refusals.values()) == {"InvalidParameterValue"}
    assert set(refusals) <= set(parked), "every refused message is still parked"
    assert len(in_dlq) == len(set(in_dlq)), "nothing sent twice"
    both = set(in_dlq) & set(parked.values())
    assert both <= {parked[i] for i in unsure if i in parked}, "in both places only if said so"
    assert set(in_dlq) | set(parked.values()) == set(range(300)), "and none lost"
    assert 50 <= len(in_dlq) < 300, "moved in parallel (some refused), stopped by Ctrl-C"
    backed_up = {
        json.loads(json.loads(line)["body"])["n"] for line in backup.read_text().splitlines()
    }
    assert set(in_dlq) <= backed_up, "everything moved was backed up first"
    done = len(in_dlq) - len(unsure)
    assert f"done: {done}, failed: {len(refusals) + len(unsure)}" in out


async def _fifo_parked(aws, proxy, tmp_path, groups: list[str], count: int) -> tuple[str, Cli]:
    """`count` parked messages of a FIFO DLQ, the groups interleaved; the DLQ and a Cli."""
    dlq = await create_queue(aws.sqs, "orders-dlq.fifo", FifoQueue="true")
    parking = await create_queue(aws.sqs, "parked.fifo", FifoQueue="true")
    for start in range(0, count, 10):
        entries = []
        for i in range(start, min(count, start + 10)):
            group = groups[i % len(groups)]
            message = DlqMessage(f"m{i}", "r", json.dumps({"n": i, "g": group}), group_id=group)
            meta = {**META, "source-queue": dlq, "group-id": group}
            parked = build_parked(message, meta)
            assert parked is not None
            entries.append(
                {
                    "Id": str(i),
                    "MessageBody": parked.body,
                    "MessageAttributes": parked.attributes,
                    "MessageGroupId": group,
                    "MessageDeduplicationId": uuid.uuid4().hex,
                }
            )
        await aws.sqs.send_message_batch(QueueUrl=parking, Entries=entries)
    tree = _tree(proxy.url)
    tree["queues"]["orders"]["name"] = "orders-dlq.fifo"
    tree["queues"]["orders"]["policy"]["parking_queue"] = "parked.fifo"
    return dlq, Cli(tmp_path, tree)


async def test_a_fifo_parking_queue_is_replayed_group_by_group_in_order(aws, proxy, tmp_path):
    """Six groups of 25, interleaved in the parking queue, replayed with ten receives and
    ten chunks in flight: every group reaches the DLQ whole and in its order."""
    groups = [f"g{k}" for k in range(6)]
    dlq, cli = await _fifo_parked(aws, proxy, tmp_path, groups, 150)
    done = await cli("parked", "replay", "orders", "--yes", "--rate", "1000", "--backup", "b")
    assert done.returncode == 0, done.stderr
    assert "done: 150, failed: 0" in done.stdout
    replayed = [json.loads(m["Body"]) for m in await drain(aws.sqs, dlq, delete=True)]
    assert len(replayed) == 150
    for group in groups:
        order = [b["n"] for b in replayed if b["g"] == group]
        assert order == sorted(order), (group, order)
        assert len(order) == 25
    assert len(proxy.requests("sqs", "SendMessageBatch")) >= 15


async def test_a_slow_fifo_replay_is_not_cut_short_by_groups_it_is_moving(aws, proxy, tmp_path):
    """Twelve messages of three groups at --rate 2: the first chunk (ten, every group)
    waits seconds for the rate, and meanwhile SQS returns nothing of those groups — which
    is not the end of the queue: the last two are replayed after it, not left unread."""
    dlq, cli = await _fifo_parked(aws, proxy, tmp_path, ["a", "b", "c"], 12)
    done = await cli("parked", "replay", "orders", "--yes", "--rate", "2", "--backup", "b")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done: 12, failed: 0" in done.stdout
    assert len(await drain(aws.sqs, dlq, delete=True)) == 12


async def test_the_rate_holds_with_ten_chunks_in_flight(aws, proxy, tmp_path):
    """--rate 20 with ten tasks moving: in any one second at most the bucket's burst (20)
    plus a second's rate (20) are sent, and 100 messages take at least four seconds."""
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parking = await create_queue(aws.sqs, "parked")
    await _park(aws, parking, dlq, 100)
    cli = Cli(tmp_path, _tree(proxy.url))
    done = await cli("parked", "purge", "orders", "--yes", "--rate", "20", "--backup", "b")
    assert done.returncode == 0, done.stderr
    assert "done: 100, failed: 0" in done.stdout
    times = proxy.times("sqs", "DeleteMessageBatch")
    sizes = [len(r["Entries"]) for r in proxy.requests("sqs", "DeleteMessageBatch")]
    assert sum(sizes) == 100
    sends = sorted(zip(times, sizes, strict=True))
    for start, _ in sends:
        in_window = sum(n for t, n in sends if start <= t < start + 1.0)
        assert in_window <= 40, (start, in_window)
    assert sends[-1][0] - sends[0][0] >= (100 - 20) / 20 - 0.5


async def test_an_action_takes_no_more_than_was_parked_when_it_started(aws, proxy, tmp_path):
    """The plan counts 120; a purge then runs while the daemon parks 30 more: it purges
    the 120, leaves the 30 and says so."""
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parking = await create_queue(aws.sqs, "parked")
    await _park(aws, parking, dlq, 120)
    cli = Cli(tmp_path, _tree(proxy.url))
    plan = await cli("parked", "purge", "orders")
    assert "plan: purge all 120 parked messages" in plan.stdout, plan.stdout
    proxy.add(Rule("sqs", "DeleteMessageBatch", "delay", seconds=0.2))  # a purge that lasts
    running = cli.start("parked", "purge", "orders", "--yes", "--rate", "1000", "--backup", "b")
    try:
        await wait_for(lambda: (tmp_path / "b").exists(), timeout=60)
        later = (datetime.now(UTC) + timedelta(seconds=5)).isoformat(timespec="seconds")
        await _park(aws, parking, dlq, 30, first=1000, **{"parked-at": later})
        out, err = await cli.ended(running)
    finally:
        running.kill()
    assert running.returncode == 0, out + err
    assert "done: 120, failed: 0" in out
    assert "left 30 matching messages parked after the command started" in out
    assert sorted(_ns(await drain(aws.sqs, parking))) == list(range(1000, 1030))


async def test_a_restore_in_lanes_keeps_each_fifo_group_in_order(aws, proxy, tmp_path):
    """200 saved messages of four groups and lines with no group (an export of a standard
    queue: one group on a FIFO queue), interleaved, restored by ten lanes to a FIFO queue:
    each once, each group in the file's order."""
    out = await create_queue(aws.sqs, "restored.fifo", FifoQueue="true")
    backup = tmp_path / "backup.jsonl"
    groups = ["g0", "g1", "g2", "g3", None]
    lines = [
        {
            "message_id": f"m{i}",
            "group_id": groups[i % 5],
            "body": json.dumps({"n": i}),
            "attributes": {},
        }
        for i in range(200)
    ]
    backup.write_text("".join(json.dumps(line) + "\n" for line in lines))
    cli = Cli(tmp_path, _tree(proxy.url))
    done = await cli("restore", str(backup), "--to", "restored.fifo", "--yes", "--rate", "1000")
    assert done.returncode == 0, done.stderr
    assert "restored 200 messages" in done.stdout
    restored = [json.loads(m["Body"])["n"] for m in await drain(aws.sqs, out, delete=True)]
    assert sorted(restored) == list(range(200))
    for k in range(5):
        group = [n for n in restored if n % 5 == k]
        assert group == sorted(group), (groups[k], group)


async def test_a_parallel_replay_to_the_target_keeps_to_its_bucket(aws, proxy, tmp_path):
    """--to target with ten chunks in flight and --rate far above the target's own bucket
    (5 a second, burst 5): the target sees at most the burst plus a second's rate in any
    second — the daemon's Guard, not the command's rate, sets the pace."""
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parking = await create_queue(aws.sqs, "parked")
    out = await create_queue(aws.sqs, "out")
    await _park(aws, parking, dlq, 30)
    tree = _tree(proxy.url)
    tree["queues"]["orders"]["rate_limit"] = {"per_second": 5, "burst": 5}
    cli = Cli(tmp_path, tree)
    done = await cli(
        "parked", "replay", "orders", "--to", "target", "--yes", "--rate", "1000", "--backup", "b"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done: 30, failed: 0" in done.stdout
    calls = [
        (t, len(r.get("Entries", [r])))
        for t, r in zip(
            proxy.times("sqs", "SendMessageBatch"),
            proxy.requests("sqs", "SendMessageBatch"),
            strict=True,
        )
        if r["QueueUrl"].endswith("/out")
    ]
    calls += [
        (t, 1)
        for t, r in zip(
            proxy.times("sqs", "SendMessage"), proxy.requests("sqs", "SendMessage"), strict=True
        )
        if r["QueueUrl"].endswith("/out")
    ]
    assert sum(n for _, n in calls) == 30
    assert await depth(aws.sqs, out) == 30
    for start, _ in calls:
        in_window = sum(n for t, n in calls if start <= t < start + 1.0)
        assert in_window <= 10, (start, in_window)
    times = sorted(t for t, _ in calls)
    assert times[-1] - times[0] >= (30 - 5) / 5 - 0.5


async def test_a_rate_of_nothing_is_refused_before_anything_is_read(aws, proxy, tmp_path):
    """--rate 0 divided by zero after the first chunk was read: held for 30 minutes. And
    --parallel outside 1..50 is refused."""
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parking = await create_queue(aws.sqs, "parked")
    await _park(aws, parking, dlq, 10)
    cli = Cli(tmp_path, _tree(proxy.url))
    for rate in ("0", "-5", "nan"):
        refused = await cli("parked", "purge", "orders", "--yes", "--rate", rate)
        assert refused.returncode == 2, refused.stderr
        assert "must be more than 0" in refused.stderr
    for parallel, said in (("0", "must be 1 or more"), ("51", "at most 50")):
        refused = await cli("parked", "summary", "orders", "--parallel", parallel)
        assert refused.returncode == 2, refused.stderr
        assert said in refused.stderr
    assert not proxy.requests("sqs", "ReceiveMessage")
    assert await depth(aws.sqs, parking) == 10


async def test_a_fifo_entry_refused_once_is_not_sent_again_behind_its_group(aws, proxy, tmp_path):
    """A transient server-side failure of the first entry of a group's chunk: sent again by
    the batch's own retry, it landed behind the entries after it (exit 0, order broken). On a
    FIFO queue it is reported instead, and the order of what was sent holds; run again, the
    restore sends it."""
    out = await create_queue(aws.sqs, "restored.fifo", FifoQueue="true")
    backup = tmp_path / "backup.jsonl"
    lines = [
        {"message_id": f"m{i}", "group_id": "g", "body": json.dumps({"n": i}), "attributes": {}}
        for i in range(20)
    ]
    backup.write_text("".join(json.dumps(line) + "\n" for line in lines))
    failing = Rule(
        "sqs", "SendMessageBatch", "fail_entries", entries=1, times=1, code="InternalError"
    )
    proxy.add(failing)
    cli = Cli(tmp_path, _tree(proxy.url))
    done = await cli("restore", str(backup), "--to", "restored.fifo", "--yes", "--rate", "1000")
    assert failing.applied == 1
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed m0: InternalError" in done.stdout
    restored = [json.loads(m["Body"])["n"] for m in await drain(aws.sqs, out, delete=True)]
    assert restored == list(range(1, 20))


async def test_a_slow_move_holds_what_it_reads_until_its_turn_and_a_plan_does_not(
    aws, proxy, tmp_path
):
    """What ten receivers and ten takers read ahead (200 messages) waits for the rate: at
    0.1 a second, 2,000 s — longer than the least hold. A move holds it twice that plus the
    margin, at the slower of --rate and the target's own bucket; a plan waits for nothing."""
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parking = await create_queue(aws.sqs, "parked")
    await create_queue(aws.sqs, "out")
    await _park(aws, parking, dlq, 5)
    tree = _tree(proxy.url)
    tree["queues"]["orders"]["rate_limit"] = {"per_second": 0.1, "burst": 1}
    cli = Cli(tmp_path, tree)

    async def holds(*args: str) -> set[int]:
        proxy.clear()
        done = await cli("parked", *args)
        assert done.returncode == 0, done.stdout + done.stderr
        return {r["VisibilityTimeout"] for r in proxy.requests("sqs", "ReceiveMessage")}

    assert await holds("purge", "orders", "--rate", "0.05") == {1800}  # the plan
    paced = await holds("purge", "orders", "--yes", "--rate", "0.1", "--limit", "1")
    assert paced == {2 * 200 / 0.1 + 600}
    target = ("replay", "orders", "--to", "target", "--yes", "--rate", "1000", "--limit", "1")
    assert await holds(*target) == {2 * 200 / 0.1 + 600}  # the target's bucket sets the pace


async def test_ctrl_c_before_anything_was_backed_up_names_no_backup(aws, proxy, tmp_path):
    """Ctrl-C while the first chunk waits for the rate: nothing was written, so no backup is
    named (the output named one that did not exist), and the output says it was stopped."""
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parking = await create_queue(aws.sqs, "parked")
    await _park(aws, parking, dlq, 20)
    cli = Cli(tmp_path, _tree(proxy.url))
    code, out, err = await cli.interrupted(
        lambda: _held(aws, parking, 10),  # a chunk read, waiting for the rate
        *("parked", "purge", "orders", "--yes", "--rate", "0.5", "--backup", "b"),
    )
    assert code == 0, out + err
    assert "done: 0, failed: 0" in out
    assert "backup:" not in out
    assert not (tmp_path / "b").exists()
    assert "interrupted (Ctrl-C): the rest stays parked" in out
    assert await depth(aws.sqs, parking) == 20


async def _held(aws, url: str, at_least: int) -> bool:
    attrs = await aws.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )
    return int(attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"]) >= at_least
