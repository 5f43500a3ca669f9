"""A queue named on the command line, resolved through the daemon's own configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlparse

from worker.aws.clients import Clients
from worker.aws.sqs import SqsQueue, resolve_queue_url
from worker.settings import CoordinationSettings, OperatorSettings, QueueSettings, Settings


class ContextError(ValueError):
    """The queue is not in the configuration (exit 2)."""


@dataclass(frozen=True)
class QueueContext:
    name: str  # the logical name
    settings: QueueSettings
    dlq: SqsQueue
    parking: SqsQueue
    coordination: CoordinationSettings = field(default_factory=CoordinationSettings)
    operator: OperatorSettings = field(default_factory=OperatorSettings)


def queue_name(ref: str) -> str:
    """The SQS queue name in a URL, an ARN or a plain name."""
    if ref.startswith(("https://", "http://")):
        return urlparse(ref).path.rstrip("/").rsplit("/", 1)[-1]
    return ref.rsplit(":", 1)[-1]


def same_queue(a: str, b: str) -> bool:
    """Two URLs of one queue (endpoints differ: sqs.<region>.amazonaws.com, a VPC endpoint,
    an emulator): the same account and name."""
    return urlparse(a).path.rstrip("/") == urlparse(b).path.rstrip("/")


def configured(settings: Settings, ref: str) -> tuple[str, QueueSettings]:
    """A logical name, or the URL (or name) of a configured DLQ."""
    if ref in settings.queues:
        return ref, settings.queues[ref]
    for name, queue in settings.queues.items():
        if queue_name(queue.queue_ref) == queue_name(ref):
            return name, queue
    known = ", ".join(sorted(settings.queues)) or "none"
    raise ContextError(f"{ref}: not a configured queue (configured: {known})")


async def open_queue(settings: Settings, ref: str, clients: Clients) -> QueueContext:
    name, queue = configured(settings, ref)
    sqs = await clients.get("sqs")
    dlq = SqsQueue(sqs, await resolve_queue_url(sqs, queue.queue_ref))
    parking = SqsQueue(sqs, await resolve_queue_url(sqs, queue.policy.parking_queue or ""))
    return QueueContext(name, queue, dlq, parking, settings.coordination, settings.operator)
