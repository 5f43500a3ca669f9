"""The notifier and its sinks, from `notify:` (part of the composition root's work)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import aiohttp

from worker.aws.clients import Clients
from worker.metrics import Metrics
from worker.notify.notifier import Notifier
from worker.notify.sinks import DigestSink, EventBridgeDigests, SnsDigests, WebhookDigests
from worker.settings.notify import NotifySettings


async def open_notifier(
    settings: NotifySettings, clients: Clients, metrics: Metrics, stack: AsyncExitStack
) -> Notifier | None:
    """None without sinks: nothing to tell anyone."""
    if not settings.sinks:
        return None
    sinks: list[DigestSink] = []
    session: aiohttp.ClientSession | None = None
    for sink in settings.sinks:
        # a topic or bus in another region is reached through that region's endpoint
        if sink.sns is not None:
            sns = await clients.at(None, sink.sns.region).get("sns")
            sinks.append(SnsDigests(sns, sink.sns))
        elif sink.eventbridge is not None:
            events = await clients.at(None, sink.eventbridge.region).get("events")
            sinks.append(EventBridgeDigests(events, sink.eventbridge))
        elif sink.webhook is not None:
            if session is None:
                timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
                session = await stack.enter_async_context(
                    # the environment's proxy only for https (sinks.proxy_for): plain http
                    # through a proxy would show it the URL, a credential
                    aiohttp.ClientSession(timeout=timeout, trust_env=False)
                )
            sinks.append(WebhookDigests(session, sink.webhook))
    return Notifier(settings, sinks, metrics)
