"""`check-config --aws`: what only AWS can say about a configuration, asked before the daemon
runs — with the calls the daemon itself makes, so it also proves the permissions hold:

- every DLQ and parking queue exists (GetQueueAttributes), and each parking queue's retention
  leaves the keeper its margin (a retention under twice `keeper.margin_seconds` makes the
  keeper re-park at half the retention: more often than you asked);
- every target is there: a Lambda function (and a Lambda hook) by an `Invoke` dry run, an SQS
  queue by GetQueueAttributes, an SQS DLQ sending back to its sources has at least one;
- what the daemon has no call for (a state machine, a topic, a bus) is described when the
  role may: a refusal there is a warning (the daemon does not need that permission), a
  resource that is not there an error;
- every notification sink: a topic or bus the same way, a webhook's URL file readable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

from worker.aws.attributes import retention_seconds
from worker.aws.clients import Clients
from worker.aws.errors import PERMANENT_CODES, error_code, error_message
from worker.aws.sqs import QUEUE_GONE_CODES, existing_queue_url, redrive_sources, resolve_queue_url
from worker.notify.sinks import SinkFailed, webhook_url
from worker.settings import (
    EventBridgeTarget,
    LambdaHookSpec,
    LambdaTarget,
    QueueSettings,
    Settings,
    SnsTarget,
    SqsTarget,
    StepFunctionsTarget,
)

DENIED = frozenset({"AccessDenied", "AccessDeniedException", "AuthorizationError"})


Place = tuple[str | None, str | None]  # (account, region): None is the deployment's own


def parking_refs(settings: Settings) -> list[tuple[Place, str]]:
    """Every parking queue the configuration names (discovery's default included), once per
    place it is named in (a name is another queue in another account or region)."""
    refs = {((q.account, q.region), q.policy.parking_queue or "") for q in settings.queues.values()}
    if settings.discovery is not None:
        refs.add(((None, None), settings.defaults.policy.parking_queue or ""))
    return sorted((r for r in refs if r[1]), key=lambda r: (str(r[0]), r[1]))


class Findings:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    async def ask(
        self, what: str, call: Callable[[], Awaitable[Any]], *, optional: str = ""
    ) -> Any:
        """The call's answer, or None with the problem noted, naming `what`. `optional`: the
        permission the daemon does not need (its refusal is a warning)."""
        try:
            return await call()
        except Exception as exc:  # noqa: BLE001 - said, naming what
            code = error_code(exc)
            if optional and code in DENIED:
                self.warnings.append(
                    f"{what}: not checked ({code}: the role lacks {optional}, "
                    "which the daemon does not need)"
                )
            elif code in QUEUE_GONE_CODES:
                self.errors.append(f"{what}: does not exist ({code})")
            else:
                detail = error_message(exc) if code in PERMANENT_CODES else ""
                self.errors.append(f"{what}: {code}" + (f" ({detail})" if detail else ""))
            return None


def _parking_named(settings: Settings, place: Clients, at: Place, ref: str) -> str:
    """A parking queue as a finding names it: where it lives, when that is not the
    deployment's own place, and the queues that park there (one name is another queue in
    each account and region)."""
    users = [
        name
        for name, q in settings.queues.items()
        if (q.account, q.region) == at and (q.policy.parking_queue or "") == ref
    ]
    where = f" in {place.where}" if place.where else ""
    of = f" (of {', '.join(users)})" if users else " (of discovered queues)"
    return f"parking queue {ref}{where}{of}"


async def preflight(settings: Settings) -> tuple[list[str], list[str]]:
    """(errors, warnings), each naming the queue and what of it."""
    found = Findings()
    margin = settings.keeper.margin_seconds
    async with AsyncExitStack() as stack:
        clients = Clients(settings.aws, stack, pool=4, accounts=settings.accounts)
        for (account, region), ref in parking_refs(settings):
            place = clients.at(account, region)
            sqs = await place.get("sqs")
            what = _parking_named(settings, place, (account, region), ref)
            url = await found.ask(what, partial(resolve_queue_url, sqs, ref))
            if url is None:
                continue
            retention = await found.ask(what, partial(retention_seconds, sqs, url))
            if retention is not None and settings.keeper.enabled and retention < 2 * margin:
                found.warnings.append(
                    f"{what}: its retention ({retention:g} s) is under twice "
                    f"keeper.margin_seconds ({margin:g} s); the keeper re-parks its messages "
                    f"{retention / 2:g} s before their end"
                )
        for name, queue in settings.queues.items():
            await _queue(found, clients, name, queue)
        await _sinks(found, clients, settings)
    return found.errors, found.warnings


async def _queue(found: Findings, clients: Clients, name: str, queue: QueueSettings) -> None:
    clients = clients.of(queue)  # where it lives: its account (the assumed role) and region
    sqs = await clients.get("sqs")
    dlq = await found.ask(
        f"queue {name}: its DLQ {queue.queue_ref}",
        partial(existing_queue_url, sqs, queue.queue_ref),
    )
    target, what = queue.target, f"queue {name}: its target"
    if isinstance(target, LambdaTarget):
        lam = await clients.get("lambda")
        dry = partial(lam.invoke, FunctionName=target.function, InvocationType="DryRun")
        await found.ask(f"{what} function {target.function}", dry)
    elif isinstance(target, SqsTarget) and target.queue:
        ref = target.queue
        await found.ask(f"{what} queue {ref}", partial(existing_queue_url, sqs, ref))
    elif isinstance(target, SqsTarget) and dlq is not None:
        sources = await found.ask(
            f"queue {name}: its DLQ's sources", partial(redrive_sources, sqs, dlq)
        )
        if sources is not None and not sources:
            found.warnings.append(
                f"queue {name}: its target sends messages back to their source, but no queue "
                f"dead-letters into {queue.queue_ref} (they would be parked `no_source`)"
            )
    elif isinstance(target, StepFunctionsTarget):
        sfn = await clients.get("stepfunctions")
        arn = target.state_machine_arn
        call = partial(sfn.describe_state_machine, stateMachineArn=arn)
        await found.ask(f"{what} state machine {arn}", call, optional="states:DescribeStateMachine")
    elif isinstance(target, SnsTarget):
        await _topic(found, clients, f"{what} topic", target.topic_arn)
    elif isinstance(target, EventBridgeTarget):
        await _bus(found, clients, f"{what} bus", target.event_bus)
    if isinstance(queue.hook, LambdaHookSpec):
        lam = await clients.get("lambda")
        dry = partial(lam.invoke, FunctionName=queue.hook.function, InvocationType="DryRun")
        await found.ask(f"queue {name}: its hook {queue.hook.function}", dry)


async def _topic(found: Findings, clients: Clients, what: str, arn: str) -> None:
    sns = await clients.get("sns")
    call = partial(sns.get_topic_attributes, TopicArn=arn)
    await found.ask(f"{what} {arn}", call, optional="sns:GetTopicAttributes")


async def _bus(found: Findings, clients: Clients, what: str, bus: str) -> None:
    events = await clients.get("events")
    call = partial(events.describe_event_bus, Name=bus)
    await found.ask(f"{what} {bus}", call, optional="events:DescribeEventBus")


async def _sinks(found: Findings, clients: Clients, settings: Settings) -> None:
    for index, sink in enumerate(settings.notify.sinks):
        what = f"notify.sinks[{index}]"
        if sink.sns is not None:
            # a topic or bus in another region is asked there, as the notifier sends there
            there = clients.at(None, sink.sns.region)
            await _topic(found, there, f"{what}: topic", sink.sns.topic_arn)
        elif sink.eventbridge is not None:
            there = clients.at(None, sink.eventbridge.region)
            await _bus(found, there, f"{what}: bus", sink.eventbridge.bus)
        elif sink.webhook is not None:
            try:
                await webhook_url(sink.webhook.url_file)
            except SinkFailed as exc:
                found.errors.append(f"{what}: {exc}")
