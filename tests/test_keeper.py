"""The keeper (worker/daemon/keeper.py): parked stays parked past the parking queue's retention.

moto drops a message `MessageRetentionPeriod` after it was sent (60 s at least); the emulator's
clock (worker/emulator/clock.py) moves forward so that several retention periods pass in a
second of the test, with real SQS calls through the proxy."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.helpers import depth
from worker.aws.clients import Clients
from worker.aws.sqs import SqsQueue, message_entry
from worker.core.envelope import DlqMessage
from worker.core.parking import build_parked, parking_metadata, read_parked
from worker.emulator import clock, create_queue, create_source_with_dlq
from worker.emulator.proxy import Rule
from worker.keeper.keeper import Keeper
from worker.metrics import Metrics
from worker.settings import AwsSettings, KeeperSettings

pytestmark = pytest.mark.anyio

RETENTION = 60  # the least SQS and moto allow
SETTINGS = KeeperSettings(margin_seconds=30, interval_seconds=5)
PARKED_AT = "2026-12-01T10:00:00+00:00"


def _parked(
    n: int, group: str | None = None, source: str = "https://sqs/orders-dlq"
) -> dict[str, Any]:
    message = DlqMessage(f"dlq-{n}", "r", json.dumps({"n": n}), group_id=group)
    meta = parking_metadata(
        reason="max_attempts",
        attempts=3,
        error="ServiceException",
        source_queue=source,
        parked_at=0,
        group_id=group,
        message_id=message.message_id,
    )
    meta["parked-at"] = PARKED_AT
    parked = build_parked(message, meta)
    assert parked is not None
    entry = message_entry(str(n), parked.body, parked.attributes)
    if group is not None:
        entry |= {"MessageGroupId": group, "MessageDeduplicationId": f"d{n}"}
    return entry


async def _queue(aws, name: str, retention: int = RETENTION, **attributes: str) -> str:
    return await create_queue(aws.sqs, name, MessageRetentionPeriod=str(retention), **attributes)


async def _park(aws, url: str, entries: list[dict[str, Any]]) -> None:
    for start in range(0, len(entries), 10):
        response = await aws.sqs.send_message_batch(
            QueueUrl=url, Entries=entries[start : start + 10]
        )
        assert not response.get("Failed")


async def _read_all(aws, url: str) -> list[dict[str, Any]]:
    """Every message, once, in the order a FIFO queue gives them (deleting as it reads)."""
    out = []
    while True:
        response = await aws.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return out
        out += messages
        await aws.sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )


@pytest.fixture
async def proxy_sqs(proxy, worker_stack):
    """An SQS client through the proxy (the keeper's calls are counted and can be failed)."""
    clients = Clients(AwsSettings(endpoint_url=proxy.url, sdk_max_attempts=1), worker_stack, pool=4)
    return await clients.get("sqs")


class TableLease:
    """The daemon's lease (worker/daemon/app.py) on a test table."""

    def __init__(self, table: Any, url: str, me: str) -> None:
        self.table, self.url, self.me = table, url, me

    async def take(self, seconds: float) -> bool:
        return bool(await self.table.keeper_lease(self.url, self.me, seconds))

    async def give_up(self) -> None:
        await self.table.keeper_give_up(self.url, self.me)


@pytest.fixture
async def table(aws):
    """A coordination table on the emulator, on the emulator's clock."""
    from worker.emulator import create_coordination_table
    from worker.fleet.table import CoordinationTable

    dynamodb = await aws.client("dynamodb")
    await create_coordination_table(dynamodb, "coordination")
    return CoordinationTable(dynamodb, "coordination", wall=clock.now)


def _keeper(aws, proxy_sqs, url: str, **kwargs: Any) -> tuple[Keeper, CollectorRegistry]:
    registry = CollectorRegistry()
    queue = SqsQueue(proxy_sqs, url)
    keeper = Keeper(queue, SETTINGS, Metrics(registry), wall=clock.now, wait=0, **kwargs)
    return keeper, registry


async def _for(keeper: Keeper, seconds: float, step: float = 5) -> None:
    """`seconds` of the emulator's time, a check every `step`."""
    for _ in range(int(seconds / step)):
        clock.advance(step)
        await keeper.check()


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_parked_messages_outlive_several_retention_periods(aws, proxy, proxy_sqs):
    parked = await _queue(aws, "parked")
    control = await _queue(aws, "control")
    await _park(aws, parked, [_parked(n) for n in range(25)])
    await _park(aws, control, [_parked(99)])
    keeper, metrics = _keeper(aws, proxy_sqs, parked)

    await _for(keeper, 3.5 * RETENTION)

    assert await _read_all(aws, control) == []  # without the keeper: gone, the emulator expires
    messages = await _read_all(aws, parked)
    views = [read_parked(m["Body"], m["MessageAttributes"]) for m in messages]
    assert sorted(json.loads(v.body)["n"] for v in views if v) == list(range(25))  # each once
    assert {v.meta["parked-at"] for v in views if v} == {PARKED_AT}  # unchanged
    assert {v.meta["message-id"] for v in views if v} == {f"dlq-{n}" for n in range(25)}
    kept = Counter(int(v.meta["kept"]) for v in views if v)
    assert min(kept) >= 3, kept  # kept again every time its end came near
    total = sum(int(v.meta["kept"]) for v in views if v)
    assert _sample(metrics, "retry_worker_keeper_kept_total", parking_queue="parked") == total
    assert _sample(
        metrics, "retry_worker_keeper_last_success_timestamp_seconds", parking_queue="parked"
    ) == pytest.approx(clock.now(), abs=6)


async def test_no_pass_while_nothing_is_near_its_end(aws, proxy, proxy_sqs):
    parked = await _queue(aws, "parked")
    await _park(aws, parked, [_parked(n) for n in range(3)])
    keeper, _ = _keeper(aws, proxy_sqs, parked)
    assert await keeper.check() is not None  # the first check reads the queue: learns the oldest
    proxy.clear()
    clock.advance(5)
    assert await keeper.check() is None  # 5 s old: due at 30 s, checked every 5 s
    assert proxy.count("sqs", "ReceiveMessage") == 0
    assert proxy.count("sqs", "GetQueueAttributes") == 1  # a check costs one request
    restarted, _ = _keeper(aws, proxy_sqs, parked)  # a new replica, or this one restarted
    assert await restarted.check() is None  # it starts from the last pass's note
    assert proxy.count("sqs", "ReceiveMessage") == 0


async def test_a_fifo_parking_queue_keeps_its_groups_in_order(aws, proxy, proxy_sqs):
    parked = await _queue(aws, "parked.fifo", FifoQueue="true", ContentBasedDeduplication="false")
    entries = [_parked(n, group=f"g{n % 3}") for n in range(12)]
    await _park(aws, parked, entries[:6])
    clock.advance(20)  # the second half of every group is younger: not due with the first
    await _park(aws, parked, entries[6:])
    keeper, _ = _keeper(aws, proxy_sqs, parked)

    clock.advance(5)
    done = await keeper.check()  # the first half is due: each group is re-parked whole
    assert done is not None
    assert done.kept == 12  # the young half too: a copy of the old half alone would overtake it
    await _for(keeper, 2 * RETENTION)  # and kept on, past two more retention periods

    messages = await _read_all(aws, parked)
    by_group: dict[str, list[int]] = {}
    for m in messages:
        view = read_parked(m["Body"], m["MessageAttributes"])
        assert view is not None
        group = m["Attributes"]["MessageGroupId"]
        by_group.setdefault(group, []).append(json.loads(view.body)["n"])
    assert by_group == {f"g{g}": [n for n in range(12) if n % 3 == g] for g in range(3)}
    sends = proxy.requests("sqs", "SendMessageBatch")
    dedup = [e["MessageDeduplicationId"] for r in sends for e in r["Entries"]]
    assert len(dedup) == len(set(dedup))  # a fresh deduplication id for every copy


def _view(entry: dict[str, Any]) -> Any:
    view = read_parked(entry["MessageBody"], entry.get("MessageAttributes", {}))
    assert view is not None
    return view


async def test_a_copy_whose_old_one_was_not_deleted_is_mended_not_copied_again(
    aws, proxy, proxy_sqs
):
    """The keeper dies between send and delete (played by a delete that never happens): two
    copies, none lost; the next pass deletes the old one instead of making a third."""
    parked = await _queue(aws, "parked")
    await _park(aws, parked, [_parked(n) for n in range(4)])
    keeper, _ = _keeper(aws, proxy_sqs, parked)
    await keeper.check()
    clock.advance(31)  # all due
    lost = proxy.add(Rule("sqs", "DeleteMessageBatch", "error", status=500, code="InternalError"))
    done = await keeper.check()
    assert done is not None
    assert (done.kept, done.doubled) == (0, 4)
    proxy.rules.remove(lost)
    assert await depth(aws.sqs, parked) == 8  # two copies each, none lost

    keeper, _ = _keeper(aws, proxy_sqs, parked)  # a new replica: it knows nothing
    clock.advance(10)  # the copies were sent delayed by the pass's hold (7 s here)
    done = await keeper.check()
    assert done is not None
    assert (done.mended, done.kept) == (4, 0)
    messages = await _read_all(aws, parked)
    views = [read_parked(m["Body"], m["MessageAttributes"]) for m in messages]
    assert sorted(json.loads(v.body)["n"] for v in views if v) == [0, 1, 2, 3]


async def test_with_coordination_one_replica_keeps_and_another_takes_over(
    aws, proxy, proxy_sqs, table
):
    parked = await _queue(aws, "parked")
    await _park(aws, parked, [_parked(n) for n in range(3)])
    a, _ = _keeper(aws, proxy_sqs, parked, lease=TableLease(table, parked, "a"))
    b, _ = _keeper(aws, proxy_sqs, parked, lease=TableLease(table, parked, "b"))
    assert await a.check() is not None  # a holds the lease: it reads
    proxy.clear()
    assert await b.check() is None
    assert b.outcome == "elsewhere"  # b does not, while a renews
    for _ in range(4):  # longer than the lease: a renews it at every check
        clock.advance(5)
        assert await a.check() is None
        assert a.outcome == "skipped"  # nothing due: no pass
        assert await b.check() is None
        assert b.outcome == "elsewhere"
    assert proxy.count("sqs", "ReceiveMessage") == 0
    clock.advance(60)  # a stopped (killed): its lease runs out
    await b.check()
    assert b.outcome in ("passed", "skipped")  # b took over (it starts from a's note)


async def test_check_config_aws_names_a_short_retention_and_a_missing_parking_queue(
    aws, proxy, tmp_path
):
    import yaml

    from tests.test_operator_loop import Cli

    await _queue(aws, "parked")  # 60 s: under twice the default margin (2 days)
    await _queue(aws, "orders-dlq")
    await _queue(aws, "billing-dlq")
    from worker.emulator import create_function

    await create_function(aws.lambda_, "fn")
    queues = {
        "orders": {"name": "orders-dlq", "target": {"kind": "lambda", "function": "fn"}},
        "billing": {
            "name": "billing-dlq",
            "target": {"kind": "lambda", "function": "fn"},
            "policy": {"parking_queue": "parked-typo"},
        },
    }
    tree = {"aws": {"endpoint_url": proxy.url}, "defaults": {"policy": {"parking_queue": "parked"}}}
    tree["queues"] = queues
    result = await Cli(tmp_path, tree)("check-config", "--aws")
    assert result.returncode == 2, result.stderr
    assert yaml.safe_load(result.stdout)["keeper"]["margin_seconds"] == 172800
    lines = result.stderr.splitlines()
    assert lines == [
        "warning: parking queue parked (of orders): its retention (60 s) is under twice "
        "keeper.margin_seconds (172800 s); the keeper re-parks its messages 30 s before their end",
        "error: parking queue parked-typo (of billing): does not exist "
        "(AWS.SimpleQueueService.NonExistentQueue)",
    ]


async def test_status_shows_the_oldest_parked_age_the_keeper_noted(aws, proxy, proxy_sqs):
    import io
    from contextlib import AsyncExitStack

    from worker.aws.clients import Clients
    from worker.ops.reading import print_status, status
    from worker.settings import Settings

    parked = await _queue(aws, "parked")
    queues = {}
    for name in ("orders", "billing"):  # two DLQs share one parking queue
        await create_queue(aws.sqs, f"{name}-dlq")
        queues[name] = {
            "name": f"{name}-dlq",
            "target": {"kind": "lambda", "function": "fn"},
            "policy": {"parking_queue": "parked"},
        }
    settings = Settings(aws={"endpoint_url": proxy.url}, queues=queues)
    stack = AsyncExitStack()
    clients = Clients(settings.aws, stack, pool=4)
    before = await status(settings, clients)
    assert (before[0]["kept_at"], before[0]["oldest_parked_at"]) == (None, None)
    await _park(aws, parked, [_parked(n) for n in range(2)])
    keeper, registry = _keeper(aws, proxy_sqs, parked)
    await keeper.check()
    proxy.clear()
    rows = await status(settings, clients)
    await stack.aclose()
    assert [r["oldest_parked_at"] for r in rows] == [PARKED_AT, PARKED_AT]
    assert proxy.count("sqs", "ListQueueTags") == 2 + 1  # each DLQ's pause, the parking queue once
    out = io.StringIO()
    parked_at = datetime.fromisoformat(PARKED_AT).timestamp()
    print_status(rows, out, now=parked_at + 3 * 86400 + 60)
    lines = out.getvalue().splitlines()
    assert lines[1].split()[5] == "3d"  # oldest: 3 days
    # the shared parking queue's whole count, marked as such on both rows
    assert [line.split()[4] for line in lines[1:3]] == ["2*", "2*"]
    assert lines[3].startswith("* the whole count of a parking queue these queues share")
    age = _sample(registry, "retry_worker_parked_oldest_age_seconds", parking_queue="parked")
    assert age == pytest.approx(clock.now() - parked_at, abs=5)


async def test_parked_list_shows_how_often_a_message_was_kept(aws, proxy, proxy_sqs, tmp_path):
    from tests.test_operator_loop import Cli

    parked = await _queue(aws, "parked")
    dlq = await create_queue(aws.sqs, "orders-dlq")
    await _park(aws, parked, [_parked(n, source=dlq) for n in range(2)])
    keeper, _ = _keeper(aws, proxy_sqs, parked)
    await _for(keeper, 60)  # kept twice
    tree = {
        "aws": {"endpoint_url": proxy.url},
        "keeper": {"enabled": False},
        "queues": {
            "orders": {
                "name": "orders-dlq",
                "target": {"kind": "lambda", "function": "fn"},
                "policy": {"parking_queue": "parked"},
            }
        },
    }
    result = await Cli(tmp_path, tree)("parked", "list", "orders", "--json")
    assert result.returncode == 0, result.stderr
    listed = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(row["kept"] for row in listed) == [2, 2]


async def test_the_console_shows_each_queues_oldest_parked_age(aws, proxy, proxy_sqs):
    import re

    from tests.conftest import make_settings
    from tests.console_client import browser, running_console

    parked = await _queue(aws, "parked")
    dlq = await create_queue(aws.sqs, "orders-dlq")
    await _park(aws, parked, [_parked(n, source=dlq) for n in range(2)])
    queues = {"orders": {"name": "orders-dlq", "target": {"kind": "lambda", "function": "fn"}}}
    settings = make_settings(aws.url, queues)

    def oldest(text: str) -> str:
        return re.findall(r'<td class="n oldest"[^>]*>([^<]*)</td>', text)[0]

    async with running_console(settings) as (url, _), browser(url) as b:
        assert oldest((await b.get("/")).text) == "?"  # not kept yet: unknown, not "none"
        keeper, _ = _keeper(aws, proxy_sqs, parked)
        await keeper.check()
        shown = oldest((await b.get("/")).text)
    parked_at = datetime.fromisoformat(PARKED_AT).timestamp()
    days = int((datetime.now().timestamp() - parked_at) // 86400)
    assert shown == f"{days}d"


# -- at production proportions (retention 3600 s, margin 600 s, interval 150 s: 14 d, 2 d, 6 h
# scaled down): the skipping logic decides, and every fault below once lost a message ---------

R, M, INTERVAL = 3600, 600, 150
SCALED = KeeperSettings(margin_seconds=M, interval_seconds=INTERVAL)


def _scaled(proxy_sqs, url: str, settings: KeeperSettings = SCALED, **kwargs: Any) -> Keeper:
    queue = SqsQueue(proxy_sqs, url)
    registry = CollectorRegistry()
    return Keeper(queue, settings, Metrics(registry), wall=clock.now, wait=0, **kwargs)


async def _run(keeper: Keeper, seconds: float) -> list[Any]:
    """`seconds` of the emulator's time, a check at the keeper's own interval."""
    until, passes = clock.now() + seconds, []
    while clock.now() < until:
        clock.advance(keeper.interval)
        passes.append(await keeper.check())
    return passes


async def _survivors(aws, url: str) -> list[int]:
    """Every live message's n, in the order the queue gives them (moto's receive stops at an
    expired message: read on until three empty answers), once the last pass's copies are no
    longer delayed."""
    clock.advance(60)
    out, empty = [], 0
    while empty < 3:
        got = await aws.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )
        messages = got.get("Messages", [])
        empty = 0 if messages else empty + 1
        for m in messages:
            view = read_parked(m["Body"], m.get("MessageAttributes", {}))
            out.append(json.loads(view.body if view else m["Body"])["n"])
        if messages:
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ]
            await aws.sqs.delete_message_batch(QueueUrl=url, Entries=entries)
    return out


async def test_the_oldest_message_decides_the_next_pass(aws, proxy, proxy_sqs):
    parked = await _queue(aws, "parked", retention=R)
    await _park(aws, parked, [_parked(0)])
    clock.advance(1000)
    await _park(aws, parked, [_parked(1)])
    keeper = _scaled(proxy_sqs, parked)
    passes = await _run(keeper, 3 * R)
    assert sorted(await _survivors(aws, parked)) == [0, 1]
    done = [p for p in passes if p is not None]
    assert len(done) < len(passes) / 3  # most checks find nothing near its end: no pass


async def test_a_refused_copy_is_tried_again_before_its_end(aws, proxy, proxy_sqs):
    parked = await _queue(aws, "parked", retention=R)
    await _park(aws, parked, [_parked(0)])
    clock.advance(1000)
    await _park(aws, parked, [_parked(1)])
    keeper = _scaled(proxy_sqs, parked)
    await keeper.check()
    proxy.add(Rule("sqs", "SendMessageBatch", "error", status=500, code="InternalError", times=1))
    await _run(keeper, 2 * R)
    assert sorted(await _survivors(aws, parked)) == [0, 1]


async def test_another_reader_during_a_pass_makes_it_incomplete(aws, proxy, proxy_sqs):
    """The console's snapshot (or an operator's read) starts just after the keeper read the
    queue's count: the pass does not see the message it holds, and must not claim it did."""
    parked = await _queue(aws, "parked", retention=R)
    await _park(aws, parked, [_parked(0)])
    clock.advance(1000)
    await _park(aws, parked, [_parked(n) for n in range(1, 4)])
    keeper = _scaled(proxy_sqs, parked)
    real = keeper._attributes

    async def another_reader_starts():
        result = await real()
        await aws.sqs.receive_message(QueueUrl=parked, MaxNumberOfMessages=1, VisibilityTimeout=60)
        return result

    keeper._attributes = another_reader_starts  # type: ignore[method-assign]
    done = await keeper.check()
    keeper._attributes = real  # type: ignore[method-assign]
    assert done is not None
    assert not done.complete
    await _run(keeper, 2 * R)
    assert sorted(await _survivors(aws, parked)) == [0, 1, 2, 3]


async def test_a_retention_shorter_than_the_interval_is_checked_often_enough(aws, proxy, proxy_sqs):
    parked = await _queue(aws, "short", retention=120)
    keeper = _scaled(proxy_sqs, parked)
    await keeper.check()
    assert keeper.interval == 30  # a quarter of the retention: half its capped margin
    await _park(aws, parked, [_parked(0)])
    await _run(keeper, 600)
    assert await _survivors(aws, parked) == [0]


async def test_a_lease_holder_that_dies_is_replaced_before_anything_is_due(
    aws, proxy, proxy_sqs, table
):
    parked = await _queue(aws, "parked", retention=R)
    widest = KeeperSettings(margin_seconds=M, interval_seconds=M / 2)  # the most allowed
    a = _scaled(proxy_sqs, parked, widest, lease=TableLease(table, parked, "a"))
    b = _scaled(proxy_sqs, parked, widest, lease=TableLease(table, parked, "b"))
    await _park(aws, parked, [_parked(0)])
    parked_at = clock.now()
    await a.check()
    for _ in range(4):  # a renews at every check; b stays out
        clock.advance(a.interval)
        await a.check()
        await b.check()
        assert (a.outcome, b.outcome) == ("skipped", "elsewhere")
    # a's last check comes just before the message is due (2700 s old), then a dies; b's
    # checks fall at their own times: the lease must end before it is too late for b.
    clock.advance(parked_at + 2690 - clock.now())
    await a.check()
    clock.advance(650)
    await b.check()
    assert b.outcome == "passed"  # took over: the lease (510 s) had ended
    await _run(b, 2 * R)
    assert await _survivors(aws, parked) == [0]


async def test_a_check_that_fails_gives_the_lease_up(aws, proxy, proxy_sqs, table):
    parked = await _queue(aws, "parked", retention=R)
    a = _scaled(proxy_sqs, parked, lease=TableLease(table, parked, "a"))
    b = _scaled(proxy_sqs, parked, lease=TableLease(table, parked, "b"))
    await a.attempt()
    assert a.outcome == "passed"  # a holds the lease
    proxy.add(Rule("sqs", "GetQueueAttributes", "error", status=403, code="AccessDenied", times=1))
    await a.attempt()  # a cannot keep (its role lacks a permission, say)
    assert a.outcome == "failed"
    await b.check()
    assert b.outcome != "elsewhere"  # b keeps now, not once a's lease runs out


async def _fed(aws) -> tuple[str, str]:
    """(a source queue, the parking queue it dead-letters to after one receive)."""
    source, parked = await create_source_with_dlq(aws.sqs, "feeder", "parked", 1)
    await aws.sqs.set_queue_attributes(
        QueueUrl=parked, Attributes={"MessageRetentionPeriod": str(R)}
    )
    return source, parked


async def test_a_redriven_message_with_an_old_send_time_is_kept(aws, proxy, proxy_sqs):
    """A parking queue that is also a queue's dead-letter queue: SQS keeps the message's old
    send time, so a pass must not wait for the oldest it knew."""
    source, parked = await _fed(aws)
    await aws.sqs.send_message(QueueUrl=source, MessageBody=json.dumps({"n": 7}))
    clock.advance(2000)
    keeper = _scaled(proxy_sqs, parked)
    await keeper.check()  # empty: nothing older than now, it believes
    for _ in range(2):  # received twice: moved to the parking queue, its send time kept
        got = await aws.sqs.receive_message(QueueUrl=source, VisibilityTimeout=0)
    assert not got.get("Messages")
    await _run(keeper, 2 * R)
    assert await _survivors(aws, parked) == [7]


async def test_two_copies_of_one_message_are_mended_to_one(aws, proxy, proxy_sqs):
    """A crash's copy, delayed and unseen, and the copy a later pass made of the same message:
    the pass after sees two young copies of one and deletes one."""
    from worker.core.parking import kept_copy

    parked = await _queue(aws, "parked")
    entry = _parked(0)
    twins = []
    for n in range(2):
        copy = kept_copy("dlq-copy-0", entry["MessageBody"], entry["MessageAttributes"], 262144)
        twins.append(message_entry(str(n), copy.body, copy.attributes))
    await _park(aws, parked, twins)
    keeper, _ = _keeper(aws, proxy_sqs, parked)
    done = await keeper.check()
    assert done is not None
    assert done.mended == 1
    assert len(await _read_all(aws, parked)) == 1


# -- the second review: FIFO groups longer than a request, crash copies in a group, a first
# check that fails, a queue fed by a redrive while another message leaves -----------------------


async def _fifo(aws) -> str:
    return await create_queue(
        aws.sqs,
        "parked.fifo",
        MessageRetentionPeriod=str(R),
        FifoQueue="true",
        ContentBasedDeduplication="false",
    )


async def test_a_fifo_group_longer_than_a_request_still_completes_a_pass(aws, proxy, proxy_sqs):
    """SQS hands out no more of a group while ten of it are held: the rest (younger) are not
    read, and the pass is complete all the same."""
    parked = await _fifo(aws)
    await _park(aws, parked, [_parked(n, group="g") for n in range(12)])
    keeper = _scaled(proxy_sqs, parked)
    done = await keeper.check()
    assert done is not None
    assert (done.read, done.complete) == (10, True)


@pytest.mark.parametrize("size", [3, 6])
async def test_crash_copies_in_a_fifo_group_are_mended_in_order(aws, proxy, proxy_sqs, size):
    parked = await _fifo(aws)
    await _park(aws, parked, [_parked(n, group="g") for n in range(size)])
    keeper = _scaled(proxy_sqs, parked)
    await keeper.check()
    clock.advance(R - M - keeper.interval + 1)  # all due
    lost = proxy.add(Rule("sqs", "DeleteMessageBatch", "error", status=500, code="InternalError"))
    await keeper.check()  # copies sent, the old ones stay: two of each
    proxy.rules.remove(lost)
    await _run(keeper, 2 * R)
    assert await _survivors(aws, parked) == list(range(size))  # in the group's order


async def test_a_first_check_that_fails_is_tried_again_soon(aws, proxy, proxy_sqs, monkeypatch):
    """The default interval (6 h) and a parking queue that keeps a message an hour: a first
    check refused (a throttle at start) must not wait 6 hours for the next."""
    import worker.keeper.keeper as keeping

    parked = await create_queue(aws.sqs, "parked", MessageRetentionPeriod="3600")
    await _park(aws, parked, [_parked(0)])
    keeper = Keeper(
        SqsQueue(proxy_sqs, parked),
        KeeperSettings(),
        Metrics(CollectorRegistry()),
        wall=clock.now,
        wait=0,
    )
    proxy.add(Rule("sqs", "GetQueueAttributes", "error", status=400, code="Throttling", times=1))
    slept: list[float] = []

    class Enough(Exception):
        pass

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if sum(slept) > 3 * 3600:
            raise Enough
        clock.advance(seconds)

    monkeypatch.setattr(keeping.anyio, "sleep", sleep)
    with pytest.raises(Enough):
        await keeper.run()
    assert max(slept[:2]) <= 60  # after the failure: soon again
    assert await _survivors(aws, parked) == [0]


async def test_a_fed_queue_is_passed_at_every_check(aws, proxy, proxy_sqs):
    """One message redriven in (its old send time kept) while one is replayed out: the count
    does not move, and the redriven one is kept all the same."""
    source, parked = await _fed(aws)
    await aws.sqs.send_message(QueueUrl=source, MessageBody=json.dumps({"n": 7}))
    clock.advance(1000)  # 7 is older than anything the keeper will see in the parking queue
    await _park(aws, parked, [_parked(1)])
    clock.advance(1000)
    keeper = _scaled(proxy_sqs, parked)
    await keeper.check()
    got = await aws.sqs.receive_message(QueueUrl=parked)  # replayed out by an operator
    [out] = got["Messages"]
    await aws.sqs.delete_message(QueueUrl=parked, ReceiptHandle=out["ReceiptHandle"])
    for _ in range(2):  # and one redriven in: the count is what it was
        await aws.sqs.receive_message(QueueUrl=source, VisibilityTimeout=0)
    await _run(keeper, 2 * R)
    assert await _survivors(aws, parked) == [7]
