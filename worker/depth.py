"""DLQ depth from GetQueueAttributes (every call is billed): read by a busy queue's poller every
`metrics.queue_depth_interval_seconds`, and by an idle queue's checks (one call does both)."""

from __future__ import annotations

from worker.aws.sqs import SqsQueue
from worker.metrics import Metrics, drop

ATTRIBUTES = {
    "ApproximateNumberOfMessages": "visible",
    "ApproximateNumberOfMessagesNotVisible": "in_flight",
    "ApproximateNumberOfMessagesDelayed": "delayed",
}


async def read_depth(queue: SqsQueue) -> dict[str, int]:
    """Visible, in-flight and delayed counts (raises what the call raised)."""
    response = await queue.client.get_queue_attributes(
        QueueUrl=queue.url, AttributeNames=list(ATTRIBUTES)
    )
    values = response.get("Attributes", {})
    return {state: int(values.get(attribute, 0)) for attribute, state in ATTRIBUTES.items()}


def record_depth(name: str, metrics: Metrics, counts: dict[str, int]) -> None:
    """`visible` always; `in_flight` and `delayed` only while not zero (an idle queue costs one
    series, not three)."""
    for state, value in counts.items():
        if value or state == "visible":
            metrics.queue_messages.labels(name, state).set(value)
        else:
            drop(metrics.queue_messages, name, state)
