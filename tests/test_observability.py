"""Metrics move as they should (by value, and as parsed from /metrics); message bodies never
reach the logs unless `logging.log_bodies` is set."""

from __future__ import annotations

import functools
import io
import json
import logging
import re
from pathlib import Path

import anyio
import pytest
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_settings
from tests.helpers import depth, wait_for
from tests.test_http import aget
from worker.aws.facts import DlqFacts
from worker.core.envelope import DlqMessage
from worker.daemon.app import serve
from worker.emulator import create_function, create_queue
from worker.emulator.proxy import Rule
from worker.logs import configure_logging
from worker.metrics import TIME_LEFT_WINDOW_SECONDS, Metrics, RetentionClock
from worker.settings import LoggingSettings

pytestmark = pytest.mark.anyio
# The metric contract as the project documents it (docs/observability.md's table, from SPEC.md).
METRICS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "observability.md"
MARKER = "BODY-MARKER-7f3a"


def documented_metrics() -> set[str]:
    return set(re.findall(r"^\| `(retry_worker_\w+)` \|", METRICS_PAGE.read_text(), re.MULTILINE))


async def run_scenario(aws, proxy, *, log_bodies: bool) -> tuple[CollectorRegistry, str, str]:
    """Three messages: one delivered at once, one after a retry, one parked."""
    await create_function(aws.lambda_, "fn")
    dlq = await create_queue(aws.sqs, "fn-dlq")
    await create_queue(aws.sqs, "parked")
    proxy.add(Rule("lambda", "Invoke", "error", status=400, code="AccessDeniedException", times=1))
    proxy.add(Rule("lambda", "Invoke", "function_error", times=1))
    for i in range(3):
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody=f'{{"n": {i}, "s": "{MARKER}"}}')
    settings = make_settings(
        proxy.url,
        {"fn": {"name": "fn-dlq", "target": {"kind": "lambda", "function": "fn"}}},
        http={"host": "127.0.0.1", "port": 0},
        logging={"log_bodies": log_bodies},
        metrics={"queue_depth_interval_seconds": 0.2},
    )
    logs = io.StringIO()
    configure_logging(LoggingSettings(format="json", log_bodies=log_bodies), stream=logs)
    registry = CollectorRegistry()
    stop = anyio.Event()

    def settled(action: str) -> float:
        labels = {"queue": "fn", "action": action}
        return registry.get_sample_value("retry_worker_messages_settled_total", labels) or 0

    async with anyio.create_task_group() as tg:
        runtime = await tg.start(functools.partial(serve, settings, stop, registry=registry))
        await wait_for(lambda: settled("deleted") == 2 and settled("parked") == 1, timeout=30)
        assert await depth(aws.sqs, dlq) == 0
        await wait_for(
            lambda: (
                registry.get_sample_value(
                    "retry_worker_queue_messages", {"queue": "fn", "state": "visible"}
                )
                == 0
            ),
            timeout=10,
        )
        _, text = await aget(f"http://127.0.0.1:{runtime.http_port}/metrics")
        stop.set()
    return registry, text, logs.getvalue()


async def test_metrics_move_as_they_should(aws, proxy):
    registry, text, _ = await run_scenario(aws, proxy, log_bodies=False)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("retry_worker_messages_received_total", queue="fn") == 4  # 3 + the retry
    deliveries = "retry_worker_deliveries_total"
    assert value(deliveries, queue="fn", target="fn", outcome="success") == 2
    assert value(deliveries, queue="fn", target="fn", outcome="retryable") == 1
    assert value(deliveries, queue="fn", target="fn", outcome="permanent") == 1
    settled = "retry_worker_messages_settled_total"
    assert value(settled, queue="fn", action="deleted") == 2
    assert value(settled, queue="fn", action="deferred") == 1
    assert value(settled, queue="fn", action="parked") == 1
    assert value("retry_worker_delivery_duration_seconds_count", queue="fn", target="fn") == 4
    assert value("retry_worker_backoff_seconds_count", queue="fn") == 1
    assert value("retry_worker_inflight_messages", queue="fn") == 0
    assert value("retry_worker_circuit_state", target="fn") == 0
    assert value("retry_worker_receive_requests_total", queue="fn", result="messages") >= 2
    errors = "retry_worker_aws_errors_total"
    assert value(errors, service="lambda", operation="Invoke", error="AccessDeniedException") == 1
    assert (
        value(errors, service="lambda", operation="Invoke", error="FunctionError.Unhandled") is None
    )
    assert value("retry_worker_queue_messages", queue="fn", state="visible") == 0
    assert value("retry_worker_build_info", version="0.1.0") == 1
    # The data-loss clock: moto's default retention is 4 days; the messages were just sent.
    retention = value("retry_worker_dlq_retention_seconds", queue="fn")
    assert retention == 345600
    assert retention - 60 < value("retry_worker_dlq_time_left_seconds", queue="fn") <= retention

    families = {f.name for f in text_string_to_metric_families(text)}
    # the parser strips `_total` from counter names
    exported = {n for n in families} | {f"{n}_total" for n in families}
    assert documented_metrics() <= exported, documented_metrics() - exported
    ours = {f.name for f in registry.collect() if f.name.startswith("retry_worker_")}
    assert {m.removesuffix("_total") for m in documented_metrics()} == ours  # both ways


def test_the_data_loss_clock_shows_the_least_time_left_in_its_window():
    now = [0.0]
    clock = RetentionClock(lambda: now[0])
    registry = CollectorRegistry()
    registry.register(clock)

    def left(queue: str = "q") -> float | None:
        return registry.get_sample_value("retry_worker_dlq_time_left_seconds", {"queue": queue})

    clock.observe("q", 1000.0, None)  # retention known, no send times: nothing to show
    assert left() is None
    assert registry.get_sample_value("retry_worker_dlq_retention_seconds", {"queue": "q"}) == 1000
    clock.observe("q", 1000.0, 500.0)
    now[0] = 100.0
    clock.observe("q", 1000.0, 800.0)
    assert left() == 500.0  # the least in the window, not the latest
    now[0] = 100.0 + TIME_LEFT_WINDOW_SECONDS
    assert left() == 800.0  # the 500 has left the window; the 800 has not
    now[0] = 200.0 + TIME_LEFT_WINDOW_SECONDS
    assert left() is None  # nothing received for 15 minutes: absent, not a stale low
    clock.observe("gone", 1000.0, 10.0)
    clock.forget("gone")
    assert left("gone") is None


def test_the_data_loss_clock_stays_small_when_nothing_scrapes_it():
    now = [0.0]
    clock = RetentionClock(lambda: now[0])
    for second in range(3 * int(TIME_LEFT_WINDOW_SECONDS)):  # fresher messages every second
        now[0] = float(second)
        clock.observe("q", 1000.0, float(second))
    assert len(clock._seen["q"]) <= TIME_LEFT_WINDOW_SECONDS + 1  # not one per batch forever


def test_a_released_queue_takes_its_gauges_with_it():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.queue_messages.labels("gone", "visible").set(7)
    metrics.paused.labels("gone").set(1)
    metrics.inflight.labels("gone").set(3)
    metrics.retention.observe("gone", 1000.0, 10.0)
    metrics.forget_queue("gone")
    left = [s for f in registry.collect() for s in f.samples if s.labels.get("queue") == "gone"]
    assert left == []


async def test_the_retention_is_read_again_every_hour(aws):
    dlq = await create_queue(aws.sqs, "short-dlq", MessageRetentionPeriod="600")
    now = [0.0]
    facts = DlqFacts(aws.sqs, dlq, clock=lambda: now[0])
    await facts.learn([])
    assert facts.retention_seconds == 600
    await aws.sqs.set_queue_attributes(QueueUrl=dlq, Attributes={"MessageRetentionPeriod": "7200"})
    now[0] = 3599.0
    await facts.learn([])
    assert facts.retention_seconds == 600  # not on every batch
    now[0] = 3600.0
    await facts.learn([])
    assert facts.retention_seconds == 7200  # raised by an operator: seen within the hour


def test_time_left_counts_from_the_oldest_send():
    facts = DlqFacts(None, "url")  # type: ignore[arg-type]  # no AWS call is made
    messages = [DlqMessage("1", "r", "{}", sent_at=t) for t in (900.0, 500.0, None)]
    assert facts.time_left(messages, now=1000.0) is None  # retention unknown: no clock
    facts.retention_seconds = 3600.0
    assert facts.time_left(messages, now=1000.0) == 3600.0 - 500.0
    assert facts.time_left([DlqMessage("2", "r", "{}")], now=1000.0) is None


def test_the_metrics_page_lists_the_metrics_we_check():
    assert len(documented_metrics()) >= 13


async def test_bodies_stay_out_of_logs(aws, proxy):
    _, _, logs = await run_scenario(aws, proxy, log_bodies=False)
    assert '"event": "parked"' in logs
    assert MARKER not in logs


async def test_bodies_are_logged_when_asked(aws, proxy):
    _, _, logs = await run_scenario(aws, proxy, log_bodies=True)
    assert MARKER in logs


def test_library_records_are_json_lines_too():
    logs = io.StringIO()
    configure_logging(LoggingSettings(format="json"), stream=logs)
    structlog.get_logger("worker.test").info("ours", queue="q")
    logging.getLogger("botocore.credentials").warning("library %s", "speaks")
    logging.getLogger("asyncio").error("socket.accept() out of system resource")
    logging.getLogger("aiohttp.server").info("below the library level: dropped")
    lines = logs.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["event"] for r in records] == [
        "ours",
        "library speaks",
        "socket.accept() out of system resource",
    ]
    assert all({"event", "level", "timestamp"} <= r.keys() for r in records)
    assert records[1]["logger"] == "botocore.credentials"
    assert records[2]["level"] == "error"
