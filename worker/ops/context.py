"""A queue named on the command line, resolved through the daemon's own configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from worker.aws.clients import Client, Clients
from worker.aws.errors import error_code, error_message, first_failure
from worker.aws.sqs import QUEUE_GONE_CODES, SqsQueue, existing_queue_url
from worker.settings import (
    CoordinationSettings,
    OperatorSettings,
    QueueSettings,
    Settings,
    parse_arn,
    queue_url_place,
)


class ContextError(ValueError):
    """The queue is not in the configuration, or a queue it names does not exist (exit 2)."""


def unreachable(exc: BaseException) -> str:
    """Why a queue could not be opened or read, as a row or a page says it: a missing queue
    by its name, else AWS's code and message (a denied permission, a role that cannot be
    assumed: the cause, never a bare code)."""
    if isinstance(exc, ContextError):
        return str(exc)
    exc = first_failure(exc)
    return f"{error_code(exc)}: {error_message(exc)}"


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


def parking_place(
    settings: Settings, queue: QueueSettings, home: str | None = None
) -> tuple[str | None, str, str]:
    """The parking queue a queue names, however it is written (a name, a URL, an ARN; the
    home region named or not): its account (None for the deployment's own), region and name.
    Two queues that share one get the same. `home`: the deployment's own account id, when
    known (`home_account`); an id that is neither it nor a member's stays itself."""
    ref = queue.policy.parking_queue or ""
    account, region = queue.account, queue.region or settings.aws.region
    if ref.startswith(("https://", "http://")):
        named, there = queue_url_place(ref)
        account, region = (None if named == home else named), there or region
    elif arn := parse_arn(ref):
        account, region = (None if arn.account == home else arn.account), arn.region or region
    return account, region, queue_name(ref)


def home_account(settings: Settings, rows: list[dict[str, Any]]) -> str | None:
    """The deployment's own account id, as a DLQ of its own read in `rows` names it (None
    when none was read)."""
    for row in rows:
        queue = settings.queues.get(row["queue"])
        if queue is not None and queue.account is None and row.get("dlq_url"):
            return queue_url_place(row["dlq_url"])[0]
    return None


def same_queue(a: str, b: str) -> bool:
    """Two URLs of one queue (endpoints differ: sqs.<region>.amazonaws.com, a VPC endpoint,
    an emulator): the same account and name."""
    return urlparse(a).path.rstrip("/") == urlparse(b).path.rstrip("/")


def configured(settings: Settings, ref: str) -> tuple[str, QueueSettings]:
    """A logical name, or the URL (or name) of a configured DLQ."""
    if ref in settings.queues:
        return ref, settings.queues[ref]
    found = [
        (name, queue)
        for name, queue in settings.queues.items()
        if queue_name(queue.queue_ref) == queue_name(ref) and _there(settings, queue, ref)
    ]
    if len(found) > 1:  # one name in several accounts or regions
        names = ", ".join(name for name, _ in found)
        raise ContextError(f"{ref}: names several configured queues ({names}): give one of those")
    if found:
        return found[0]
    known = ", ".join(sorted(settings.queues)) or "none"
    raise ContextError(f"{ref}: not a configured queue (configured: {known})")


def _there(settings: Settings, queue: QueueSettings, ref: str) -> bool:
    """Whether a URL given on the command line can be this queue's: the same URL, or (for a
    queue configured by name) its account and region."""
    if not ref.startswith(("https://", "http://")):
        return True
    if queue.queue_ref.startswith(("https://", "http://")):
        return same_queue(queue.queue_ref, ref)
    account, region = queue_url_place(ref)
    members = {a.id for a in settings.accounts}
    if (queue.account or None) != (account if account in members else None):
        return False
    return region is None or region == (queue.region or settings.aws.region)


async def open_dlq(settings: Settings, ref: str, clients: Clients) -> tuple[str, SqsQueue]:
    """A configured queue's logical name and its DLQ, which must exist (pause and resume
    need nothing else: a missing parking queue is no reason not to pause)."""
    name, queue = configured(settings, ref)
    sqs = await clients.of(queue).get("sqs")  # where it lives: its account and region
    return name, SqsQueue(sqs, await existing(sqs, queue.queue_ref, f"{name}: its DLQ"))


async def open_queue(settings: Settings, ref: str, clients: Clients) -> QueueContext:
    name, dlq = await open_dlq(settings, ref, clients)
    queue = settings.queues[name]
    parking_ref = queue.policy.parking_queue or ""
    where = f"{name}: its parking queue"
    parking = SqsQueue(dlq.client, await existing(dlq.client, parking_ref, where))
    return QueueContext(name, queue, dlq, parking, settings.coordination, settings.operator)


def place_of_ref(settings: Settings, clients: Clients, ref: str) -> Clients:
    """Where a queue named on the command line lives: a URL says its account and region; a
    name is looked for among the configured queues (a logical name, a DLQ, a parking queue)
    and must name one place (else: give its URL); a name found nowhere is the deployment's."""
    members = {a.id for a in settings.accounts}
    if ref.startswith(("https://", "http://")):
        account, region = queue_url_place(ref)
        return clients.at(account if account in members else None, region)
    places = {
        (q.account, q.region or settings.aws.region)
        for n, q in settings.queues.items()
        if ref in (n, q.queue_ref, q.policy.parking_queue)
    }
    if len(places) > 1:
        found = ", ".join(sorted(f"{a or 'own'}/{r}" for a, r in places))
        raise ContextError(
            f"{ref}: a queue of that name lives in several places ({found}): give its URL"
        )
    return clients.at(*places.pop()) if places else clients


async def existing(sqs: Client, ref: str, what: str) -> str:
    """The URL of a queue that exists (a URL is asked too: a typo in one would read as an
    empty queue); ContextError naming it when it does not."""
    try:
        return await existing_queue_url(sqs, ref)
    except Exception as exc:
        code = error_code(exc)
        if code in QUEUE_GONE_CODES:
            raise ContextError(f"{what} {ref} does not exist ({code})") from exc
        raise
