"""What a queue says about itself through its attributes and tags: depth counts, retention,
and the pause tag (SPEC.md, Pause). Read by the queue loop and by the operator commands;
written by `pause` / `resume` only. Every call here is billed: callers decide how often."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from worker.aws.clients import Client
from worker.aws.sqs import SqsQueue

PAUSED_TAG = "retry-worker:paused"
NOTE_TAG = "retry-worker:paused-note"
MAX_TAG_VALUE = 256
# The keeper's note on a parking queue (SPEC.md, Keeping parked messages): when its last
# complete pass ended and the oldest `parked-at` it saw, for `status` and the console.
KEPT_AT_TAG = "retry-worker:kept-at"
OLDEST_TAG = "retry-worker:oldest-parked-at"
# ... and what the next keeper (a restarted replica) needs to skip a pass: the oldest send time
# of what stayed (epoch seconds) and how many messages there were.
SENT_TAG = "retry-worker:oldest-sent"
COUNT_TAG = "retry-worker:kept-count"

DEPTH_ATTRIBUTES = {
    "ApproximateNumberOfMessages": "visible",
    "ApproximateNumberOfMessagesNotVisible": "in_flight",
    "ApproximateNumberOfMessagesDelayed": "delayed",
}


async def read_depth(queue: SqsQueue) -> dict[str, int]:
    """Visible, in-flight and delayed counts (raises what the call raised)."""
    return (await read_depth_and_retention(queue, retention=False))[0]


async def read_depth_and_retention(
    queue: SqsQueue, *, retention: bool = True
) -> tuple[dict[str, int], float | None]:
    """The depth counts and, in the same call, the retention (the keeper's check)."""
    names = [*DEPTH_ATTRIBUTES, *(["MessageRetentionPeriod"] if retention else [])]
    response = await queue.client.get_queue_attributes(QueueUrl=queue.url, AttributeNames=names)
    values = response.get("Attributes", {})
    depth = {state: int(values.get(name, 0)) for name, state in DEPTH_ATTRIBUTES.items()}
    kept = values.get("MessageRetentionPeriod")
    return depth, float(kept) if kept is not None else None


async def retention_seconds(client: Client, url: str) -> float:
    """The queue's MessageRetentionPeriod (SQS drops a message that long after it was sent)."""
    response = await client.get_queue_attributes(
        QueueUrl=url, AttributeNames=["MessageRetentionPeriod"]
    )
    return float(response["Attributes"]["MessageRetentionPeriod"])


@dataclass(frozen=True)
class PauseTag:
    paused: bool
    note: str | None = None  # the pause's time and reason, while paused


async def read_pause(client: Client, url: str) -> PauseTag:
    """The DLQ's pause tag (raises what ListQueueTags raised)."""
    tags: dict[str, str] = (await client.list_queue_tags(QueueUrl=url)).get("Tags", {})
    paused = tags.get(PAUSED_TAG) == "true"
    return PauseTag(paused, tags.get(NOTE_TAG) if paused else None)


async def write_pause(queue: SqsQueue, reason: str | None) -> str:
    """Pause the queue for every replica; returns the note written (time and reason)."""
    note = datetime.now(UTC).isoformat(timespec="seconds") + (f" {reason}" if reason else "")
    note = note[:MAX_TAG_VALUE]
    await queue.client.tag_queue(QueueUrl=queue.url, Tags={PAUSED_TAG: "true", NOTE_TAG: note})
    return note


async def clear_pause(queue: SqsQueue) -> None:
    await queue.client.untag_queue(QueueUrl=queue.url, TagKeys=[PAUSED_TAG, NOTE_TAG])


@dataclass(frozen=True)
class KeptTag:
    kept_at: str | None  # ISO seconds, UTC
    oldest_parked_at: str | None  # ISO seconds, UTC; None: the queue was empty
    oldest_sent: float | None = None
    count: int | None = None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


async def read_kept(client: Client, url: str) -> KeptTag:
    """The keeper's note on a parking queue (raises what ListQueueTags raised)."""
    tags: dict[str, str] = (await client.list_queue_tags(QueueUrl=url)).get("Tags", {})
    count = _number(tags.get(COUNT_TAG))
    return KeptTag(
        tags.get(KEPT_AT_TAG),
        tags.get(OLDEST_TAG) or None,
        _number(tags.get(SENT_TAG)),
        int(count) if count is not None else None,
    )


async def write_kept(queue: SqsQueue, note: KeptTag) -> None:
    tags = {
        KEPT_AT_TAG: note.kept_at or "",
        OLDEST_TAG: note.oldest_parked_at or "",
        SENT_TAG: repr(round(note.oldest_sent, 3)) if note.oldest_sent is not None else "",
        COUNT_TAG: str(note.count) if note.count is not None else "",
    }
    await queue.client.tag_queue(QueueUrl=queue.url, Tags=tags)
