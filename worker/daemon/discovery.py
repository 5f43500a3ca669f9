"""Queue discovery: serve every DLQ whose name starts with `discovery.prefix`, with
`kind: auto`; queues that appear are picked up and queues that disappear are drained, without
a restart. Parking queues and explicitly configured queues are never served twice. Discovery
runs in the deployment's own account and region and in each account of `discovery.accounts`,
in each of its regions (a queue found there is named `<account>/<region>/<name>`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog

from worker.aws.clients import Client, Clients
from worker.aws.errors import error_code, metric_code
from worker.daemon.health import Health
from worker.metrics import Metrics
from worker.settings import QueueSettings, Settings, member_regions

log = structlog.get_logger("worker.daemon.discovery")

StartQueue = Callable[[str, QueueSettings], Awaitable[None]]


async def list_queues(sqs: Client, prefix: str) -> dict[str, str]:
    """Queue URLs by name (the URLs are kept: a discovered queue needs no GetQueueUrl)."""
    found: dict[str, str] = {}
    kwargs: dict[str, Any] = {"QueueNamePrefix": prefix, "MaxResults": 1000}
    while True:
        response = await sqs.list_queues(**kwargs)
        found.update({url.rsplit("/", 1)[-1]: url for url in response.get("QueueUrls", [])})
        token = response.get("NextToken")
        if not token:
            return found
        kwargs["NextToken"] = token


def _excluded(
    settings: Settings, discovered: QueueSettings, account: str | None, region: str | None
) -> set[str]:
    """Names never to serve as discovered DLQs in this place: the queues configured there and
    their parking queues (a queue of that name elsewhere is another queue)."""
    home = settings.aws.region
    here = [
        q
        for q in settings.queues.values()
        if (q.account, q.region or home) == (account, region or home)
    ]
    refs = [q.queue_ref for q in here]
    refs += [q.policy.parking_queue or "" for q in here]
    refs.append(discovered.policy.parking_queue or "")
    return {ref.rsplit("/", 1)[-1].rsplit(":", 1)[-1] for ref in refs if ref}


async def discover_all(
    settings: Settings, clients: Clients, health: Health, metrics: Metrics, start: StartQueue
) -> None:
    """One discovery loop per place: the deployment's own, and each member account's regions."""
    assert settings.discovery is not None
    members = {a.id: a for a in settings.accounts}
    async with anyio.create_task_group() as tg:
        tg.start_soon(discover, settings, await clients.get("sqs"), health, metrics, start)
        for account in settings.discovery.accounts:
            for region in member_regions(members[account], settings.aws.region):
                sqs = await clients.at(account, region).get("sqs")
                tg.start_soon(_discover_at, settings, sqs, health, metrics, start, account, region)


async def _discover_at(
    settings: Settings,
    sqs: Client,
    health: Health,
    metrics: Metrics,
    start: StartQueue,
    account: str,
    region: str,
) -> None:
    await discover(settings, sqs, health, metrics, start, account=account, region=region)


async def discover(
    settings: Settings,
    sqs: Client,
    health: Health,
    metrics: Metrics,
    start: StartQueue,
    *,
    account: str | None = None,
    region: str | None = None,
) -> None:
    discovery = settings.discovery
    assert discovery is not None
    defaults = settings.defaults.model_dump(mode="json")
    template = discovery.queue_for(f"{discovery.prefix}template", defaults)
    excluded = _excluded(settings, template, account, region)
    serving: dict[str, anyio.CancelScope] = {}

    async def serve_one(name: str, url: str) -> None:
        with anyio.CancelScope() as scope:
            serving[name] = scope
            health.queues.append(name)
            try:
                queue = discovery.queue_for(
                    name.rsplit("/", 1)[-1], defaults, url=url, account=account, region=region
                )
                await start(name, queue)
            finally:
                health.queues.remove(name)
                health.pollers.pop(name, None)
                health.unresolved.pop(name, None)
                metrics.forget_queue(name)
                serving.pop(name, None)
                log.info("queue_released", queue=name)

    async with anyio.create_task_group() as tg:
        while not health.stopping:
            try:
                listed = await list_queues(sqs, discovery.prefix)
                where = f"{account}/{region}/" if account else ""
                found = {where + n: u for n, u in listed.items() if n not in excluded}
            except Exception as exc:  # noqa: BLE001 - try again next refresh
                code = error_code(exc)
                metrics.aws_errors.labels("sqs", "ListQueues", metric_code(code)).inc()
                log.warning("discovery_failed", error=code)
            else:
                for name in sorted(found.keys() - serving.keys()):
                    log.info("queue_discovered", queue=name)
                    tg.start_soon(serve_one, name, found[name])
                for name in sorted(serving.keys() - found):
                    log.info("queue_vanished", queue=name)
                    _stop(name, health, serving)
            await anyio.sleep(discovery.refresh_seconds)


def _stop(name: str, health: Health, serving: dict[str, anyio.CancelScope]) -> None:
    poller = health.pollers.get(name)
    if poller is not None:
        poller.stop_receiving()  # drain what is in flight, then the task ends
    else:
        serving[name].cancel()  # still resolving: nothing in flight
