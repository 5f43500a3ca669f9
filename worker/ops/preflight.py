"""`check-config --aws`: what only AWS can say about a configuration, asked before the daemon
runs. Today: each parking queue exists, and its retention leaves the keeper its margin (a
retention under twice `keeper.margin_seconds` makes the keeper re-park at half the retention:
more often than you asked)."""

from __future__ import annotations

from contextlib import AsyncExitStack

from worker.aws.attributes import retention_seconds
from worker.aws.clients import Clients
from worker.aws.errors import error_code
from worker.aws.sqs import resolve_queue_url
from worker.settings import Settings


def parking_refs(settings: Settings) -> list[str]:
    """Every parking queue the configuration names (discovery's default included), once."""
    refs = {q.policy.parking_queue or "" for q in settings.queues.values()}
    if settings.discovery is not None:
        refs.add(settings.defaults.policy.parking_queue or "")
    return sorted(r for r in refs if r)


async def preflight(settings: Settings) -> tuple[list[str], list[str]]:
    """(errors, warnings), each naming the queue."""
    errors, warnings = [], []
    margin = settings.keeper.margin_seconds
    async with AsyncExitStack() as stack:
        sqs = await Clients(settings.aws, stack, pool=4).get("sqs")
        for ref in parking_refs(settings):
            try:
                url = await resolve_queue_url(sqs, ref)
                retention = await retention_seconds(sqs, url)
            except Exception as exc:  # noqa: BLE001 - said, with the queue's name
                errors.append(f"parking queue {ref}: {error_code(exc)}")
                continue
            if settings.keeper.enabled and retention < 2 * margin:
                warnings.append(
                    f"parking queue {ref}: its retention ({retention:g} s) is under twice "
                    f"keeper.margin_seconds ({margin:g} s); the keeper re-parks its messages "
                    f"{retention / 2:g} s before their end"
                )
    return errors, warnings
