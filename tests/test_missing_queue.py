"""A DLQ that does not exist (a typo in its name or URL) is named wherever it matters: the
daemon says so in `/readyz?verbose` and a gauge, tries again with backoff and starts once the
queue appears; `status` gives it a row of its own; an operator command on it exits 2."""

from __future__ import annotations

import functools
import json

import anyio
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import make_settings
from tests.helpers import depth, wait_for
from tests.test_http import aget
from tests.test_operator_loop import Cli
from worker.daemon.app import serve
from worker.emulator import create_function, create_queue
from worker.emulator.proxy import Rule

pytestmark = pytest.mark.anyio

GONE = "AWS.SimpleQueueService.NonExistentQueue"


def _settings(endpoint: str):
    return make_settings(
        endpoint,
        {
            "orders": {"name": "orders-dlq", "target": {"kind": "sqs", "queue": "out"}},
            "ghost": {"name": "ghost-dlq", "target": {"kind": "sqs", "queue": "out"}},
        },
        http={"host": "127.0.0.1", "port": 0},
    )


async def test_the_daemon_names_a_missing_dlq_backs_off_and_starts_once_it_exists(aws, proxy):
    orders = await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "out")
    await create_queue(aws.sqs, "parked")
    await aws.sqs.send_message(QueueUrl=orders, MessageBody="retry me")
    registry = CollectorRegistry()
    stop = anyio.Event()

    def missing() -> float | None:
        return registry.get_sample_value("retry_worker_queue_missing", {"queue": "ghost"})

    async def verbose() -> str:
        return (await aget(f"http://127.0.0.1:{runtime.http_port}/readyz?verbose"))[1]

    async with anyio.create_task_group() as tg:
        runtime = await tg.start(
            functools.partial(serve, _settings(proxy.url), stop, registry=registry)
        )
        await wait_for(lambda: missing() == 1, timeout=20)
        resolve = {"service": "sqs", "operation": "ResolveQueue", "error": GONE}
        assert registry.get_sample_value("retry_worker_aws_errors_total", resolve) >= 1
        said = await verbose()
        assert "[!] queue ghost: not started: its DLQ ghost-dlq does not exist" in said
        await wait_for(lambda: _empty(aws, orders), timeout=20)  # the others are served
        asked = proxy.count("sqs", "GetQueueUrl")
        ghost = await create_queue(aws.sqs, "ghost-dlq")
        await aws.sqs.send_message(QueueUrl=ghost, MessageBody="late")
        await wait_for(lambda: _empty(aws, ghost), timeout=30)  # it started by itself
        assert missing() == 0
        assert "[!] queue ghost" not in await verbose()
        stop.set()
    # backoff, not a hot loop: a handful of tries while the queue was missing
    assert asked <= 6, asked


async def _empty(aws, url: str) -> bool:
    return await depth(aws.sqs, url) == 0


async def test_status_gives_a_missing_dlq_its_own_row_and_a_command_on_it_exits_2(aws, tmp_path):
    await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "out")
    await create_queue(aws.sqs, "parked")
    cli = Cli(tmp_path, _settings(aws.url).model_dump(mode="json"))

    status = await cli("status")
    assert status.returncode == 1, status.stderr
    rows = {line.split()[0]: line for line in status.stdout.splitlines()[1:]}
    assert rows["ghost"].split(None, 1)[1] == (
        f"cannot read: its DLQ ghost-dlq does not exist ({GONE})"
    )
    # read all the same; its parked count is the parking queue ghost shares (ghost's own
    # messages may be parked there): marked, and said under the table
    assert rows["orders"].split()[1:5] == ["0", "0", "0", "0*"]
    assert status.stdout.splitlines()[-1].startswith("* the whole count of a parking queue")

    summary = await cli("parked", "summary", "ghost")
    assert summary.returncode == 2
    assert summary.stderr.strip() == f"parked: ghost: its DLQ ghost-dlq does not exist ({GONE})"
    assert "parked messages" not in summary.stdout  # not "0 parked messages"


async def test_restore_to_a_missing_queue_exits_2_and_pause_needs_only_the_dlq(aws, tmp_path):
    """`restore --to` a queue that does not exist exits 2 naming it (a mistyped URL planned
    "restore 1 messages" and then failed message by message); pause and resume act on the
    DLQ alone: a missing parking queue is no reason not to pause."""
    await create_queue(aws.sqs, "orders-dlq")
    cli = Cli(tmp_path, _settings(aws.url).model_dump(mode="json"))
    backup = tmp_path / "backup.jsonl"
    line = {"message_id": "m1", "group_id": None, "body": "{}", "attributes": {}}
    backup.write_text(json.dumps(line) + "\n")
    url = (await aws.sqs.get_queue_url(QueueName="orders-dlq"))["QueueUrl"]
    for to in ("orders-dlqq", url + "q"):
        restore = await cli("restore", str(backup), "--to", to)
        assert restore.returncode == 2, restore.stdout
        assert restore.stderr.strip() == f"restore: --to {to} does not exist ({GONE})"
    planned = await cli("restore", str(backup), "--to", "orders-dlq")
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.startswith("plan: restore 1 message from")

    paused = await cli("pause", "orders", "--reason", "parking queue recreated")
    assert paused.returncode == 0, paused.stderr  # no parking queue: pausing is what helps
    resumed = await cli("resume", "orders")
    assert resumed.returncode == 0, resumed.stderr
    ghost = await cli("pause", "ghost", "--reason", "x")
    assert ghost.returncode == 2
    assert ghost.stderr.strip() == f"pause: ghost: its DLQ ghost-dlq does not exist ({GONE})"


async def test_a_dlq_given_by_a_wrong_url_is_named_by_its_failing_receives(aws, worker_stack):
    """A URL is not resolved at start (it costs nothing): its receives say it, in the notes
    of `/readyz?verbose` and the gauge, until one works."""
    from tests.conftest import Worker

    await create_queue(aws.sqs, "parked")
    wrong = f"{aws.url}/123456789012/orders-dlq-typo"
    queue = {"url": wrong, "target": {"kind": "sqs", "queue": "out"}}
    worker = Worker(make_settings(aws.url, {"orders": queue}), worker_stack)
    poller = await worker.poller("orders")
    await poller.run_once()
    await poller.run_once()
    assert poller.notes() == [
        f"its DLQ does not exist ({GONE}, 2 in a row; tried again with backoff)"
    ]
    gauge = worker.registry.get_sample_value("retry_worker_queue_missing", {"queue": "orders"})
    assert gauge == 1
    await create_queue(aws.sqs, "orders-dlq-typo")
    await poller.run_once()
    assert poller.notes() == []
    assert worker.registry.get_sample_value("retry_worker_queue_missing", {"queue": "orders"}) == 0


async def test_check_config_aws_names_every_missing_queue_target_and_sink(aws, proxy, tmp_path):
    await create_function(aws.lambda_, "orders-fn")
    for name in ("orders-dlq", "billing-dlq", "invoices-dlq", "fulfil-dlq", "hooked-dlq"):
        await create_queue(aws.sqs, name)
    await create_queue(aws.sqs, "parked")
    sqs_target = {"kind": "sqs", "queue": "nowhere"}
    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:fulfil"
    # a role without states:DescribeStateMachine (the daemon does not need it)
    proxy.add(Rule("states", "DescribeStateMachine", "error", 400, "AccessDeniedException"))
    fn = {"kind": "lambda", "function": "orders-fn"}
    settings = make_settings(
        proxy.url,
        {
            "orders": {"name": "orders-dlq", "target": fn},
            "ghost": {"name": "ghost-dlq", "target": fn},
            "billing": {"name": "billing-dlq", "target": {"kind": "lambda", "function": "gone-fn"}},
            "invoices": {"name": "invoices-dlq", "target": sqs_target},
            "fulfil": {
                "name": "fulfil-dlq",
                "target": {"kind": "stepfunctions", "state_machine_arn": machine},
            },
            "hooked": {
                "name": "hooked-dlq",
                "target": {"kind": "sqs", "source": True},
                "hook": {"lambda": "no-hook-fn"},
            },
        },
        notify={
            "sinks": [
                {"sns": {"topic_arn": "arn:aws:sns:us-east-1:123456789012:no-such-topic"}},
                {"webhook": {"url_file": str(tmp_path / "missing-secret")}},
            ]
        },
    )
    cli = Cli(tmp_path, settings.model_dump(mode="json"))
    result = await cli("check-config", "--aws")
    assert result.returncode == 2
    warnings = sorted(line for line in result.stderr.splitlines() if line.startswith("warning: "))
    assert warnings == [
        f"warning: queue fulfil: its target state machine {machine}: not checked "
        "(AccessDeniedException: the role lacks states:DescribeStateMachine, which the daemon "
        "does not need)",
        "warning: queue hooked: its target sends messages back to their source, but no queue "
        "dead-letters into hooked-dlq (they would be parked `no_source`)",
    ]
    errors = sorted(line for line in result.stderr.splitlines() if line.startswith("error: "))
    assert errors == sorted(
        [
            f"error: queue ghost: its DLQ ghost-dlq: does not exist ({GONE})",
            "error: queue billing: its target function gone-fn: ResourceNotFoundException "
            "(Function not found: arn:aws:lambda:us-east-1:123456789012:function:gone-fn)",
            f"error: queue invoices: its target queue nowhere: does not exist ({GONE})",
            "error: queue hooked: its hook no-hook-fn: ResourceNotFoundException "
            "(Function not found: arn:aws:lambda:us-east-1:123456789012:function:no-hook-fn)",
            "error: notify.sinks[0]: topic arn:aws:sns:us-east-1:123456789012:no-such-topic: "
            "NotFound (Topic does not exist)",
            f"error: notify.sinks[1]: url_file {tmp_path / 'missing-secret'}: "
            "No such file or directory",
        ]
    ), result.stderr
    assert "orders" not in result.stderr  # everything of it holds


async def test_the_console_queue_list_says_why_a_queue_cannot_be_read(aws):
    from tests.console_client import browser, running_console

    await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "parked")
    async with running_console(_settings(aws.url)) as (url, _), browser(url) as b:
        rows = (await b.get("/")).element("queues")
    assert f"ghost cannot read: ghost: its DLQ ghost-dlq does not exist ({GONE})" in rows


def test_a_released_queue_takes_its_missing_gauge_with_it():
    """Discovery releases a deleted queue: were its gauge left at 1, an alert on it would
    fire for ever (and a queue recreated later would never clear it)."""
    from worker.metrics import Metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.queue_missing.labels("retry-orders-dlq").set(1)
    metrics.forget_queue("retry-orders-dlq")
    labels = {"queue": "retry-orders-dlq"}
    assert registry.get_sample_value("retry_worker_queue_missing", labels) is None


async def test_the_console_says_why_a_denied_queue_cannot_be_opened(aws, proxy):
    """GetQueueUrl refused (a missing permission; an account whose role cannot be assumed):
    the queue list's row and the queue's page say AWS's code and message. The row said the
    bare code, the page a 500."""
    from tests.console_client import browser, running_console

    await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "ghost-dlq")
    await create_queue(aws.sqs, "parked")
    said = "not authorized to perform: sqs:getqueueurl on ghost-dlq"
    proxy.add(
        Rule(
            "sqs",
            "GetQueueUrl",
            "error",
            status=403,
            code="AccessDenied",
            body="ghost-dlq",
            extra={"message": said},
        )
    )
    async with running_console(_settings(proxy.url)) as (url, _), browser(url) as b:
        rows = (await b.get("/")).element("queues")
        page = await b.get("/queues/ghost")
    assert f"ghost cannot read: AccessDenied: {said}" in rows
    assert page.status == 503
    assert f"ghost: AccessDenied: {said}" in page.text


def test_the_footnote_is_for_a_mark_above_it():
    """Two unreadable queues share a parking queue, a third has its own: no row is marked,
    so no footnote (it said "*" of nothing)."""
    import io

    from worker.ops.reading import print_status

    ok = {
        "queue": "orders",
        "dlq": {"visible": 0, "in_flight": 0, "delayed": 0},
        "parking_queue": "http://127.0.0.1/1/own-parked",
        "parked": 3,
        "kept_at": None,
        "target": "sqs:out",
        "paused": False,
        "shared_parking": False,
    }
    ghosts = [
        {"queue": q, "target": "sqs:out", "error": "gone", "shared_parking": True}
        for q in ("ghost1", "ghost2")
    ]
    out = io.StringIO()
    print_status([ok, *ghosts], out, now=0)
    assert "*" not in out.getvalue()
    out = io.StringIO()
    print_status([{**ok, "shared_parking": True}, *ghosts], out, now=0)
    assert out.getvalue().splitlines()[-1].startswith("* the whole count")
