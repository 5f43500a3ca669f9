"""DLQ depth gauges from GetQueueAttributes, on a slow cadence (every call is billed)."""

from __future__ import annotations

import anyio
import structlog

from worker.aws.errors import error_code, metric_code
from worker.aws.sqs import SqsQueue
from worker.metrics import Metrics

log = structlog.get_logger("worker.depth")

ATTRIBUTES = {
    "ApproximateNumberOfMessages": "visible",
    "ApproximateNumberOfMessagesNotVisible": "in_flight",
    "ApproximateNumberOfMessagesDelayed": "delayed",
}


async def refresh_depth(name: str, dlq: SqsQueue, metrics: Metrics) -> None:
    try:
        response = await dlq.client.get_queue_attributes(
            QueueUrl=dlq.url, AttributeNames=list(ATTRIBUTES)
        )
    except Exception as exc:  # noqa: BLE001 - a gauge that cannot refresh keeps its value
        metrics.aws_errors.labels("sqs", "GetQueueAttributes", metric_code(error_code(exc))).inc()
        log.warning("queue_depth_failed", queue=name, error=error_code(exc))
        return
    values = response.get("Attributes", {})
    for attribute, state in ATTRIBUTES.items():
        metrics.queue_messages.labels(name, state).set(int(values.get(attribute, 0)))


async def watch_depth(name: str, dlq: SqsQueue, metrics: Metrics, interval: float) -> None:
    while True:
        await refresh_depth(name, dlq, metrics)
        await anyio.sleep(interval)
