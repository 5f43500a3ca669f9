"""`retry-worker iam-policy`: the least-privilege IAM policy a configuration needs.

Only the actions each queue and target needs, on exactly their ARNs. Queues and functions
given by name need the account id (`--account-id`); the partition follows the region.
`build_policy` is pure; `resolve_sources` (for `--resolve-sources`) asks AWS which queues
dead-letter into each DLQ, so the redrive grants can name them instead of a wildcard.
"""

from __future__ import annotations

import json
from collections import defaultdict
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlparse

from worker.aws.clients import Clients
from worker.aws.sqs import redrive_sources, resolve_queue_url
from worker.ops.member_iam import assume_grants, policy_queues
from worker.settings import (
    AutoTarget,
    EventBridgeTarget,
    LambdaHookSpec,
    LambdaTarget,
    QueueSettings,
    Settings,
    SnsTarget,
    SqsTarget,
    StepFunctionsTarget,
    queue_url_place,
)
from worker.settings import (
    partition_of as partition,
)

DLQ_ACTIONS = (
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:ListDeadLetterSourceQueues",
    "sqs:ListQueueTags",  # the pause tag
    "sqs:ReceiveMessage",
)
# GetQueueAttributes: the queue's MaximumMessageSize, read once before the first send.
SEND_ACTIONS = ("sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage")
# The keeper (SPEC.md, Keeping parked messages): a pass reads, re-parks (SEND_ACTIONS) and
# deletes the old copy or releases what is not due.
# It notes its last pass in the queue's tags (for `status`, and a restarted keeper reads it).
KEEPER_ACTIONS = (
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:ListDeadLetterSourceQueues",  # a parking queue that is a DLQ: old send times arrive
    "sqs:ListQueueTags",
    "sqs:ReceiveMessage",
    "sqs:TagQueue",
)
AUTO_ACTIONS = {
    "lambda": ("lambda:InvokeFunction",),
    "sqs": SEND_ACTIONS,
    "states": ("states:StartExecution",),
    "sns": ("sns:Publish",),
}

# `kind: auto` redrives the execution a "Step Functions Execution Status Change" event names;
# what it cannot redrive, DescribeExecution tells it why.
REDRIVE_ACTIONS = ("states:DescribeExecution", "states:RedriveExecution")


def executions_of(machine: str) -> str:
    """The executions of a state machine ARN (or `allow` pattern), as IAM names them."""
    return machine.replace(":stateMachine:", ":execution:", 1) + ":*"


# Coordination: exactly the item operations the daemon makes on its table (worker/aws/table.py).
TABLE_ACTIONS = ("dynamodb:DeleteItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem")


class PolicyError(ValueError):
    """The configuration names something whose ARN cannot be known offline."""


class Arns:
    def __init__(self, region: str, account: str | None) -> None:
        self.region = region
        self.account = account
        self.partition = partition(region)

    def _account(self, what: str) -> str:
        if not self.account:
            raise PolicyError(f"{what} is given by name: pass --account-id")
        return self.account

    def queue(self, ref: str) -> str:
        """A queue ARN from a URL, a name or an ARN."""
        if ref.startswith("arn:"):
            return ref
        if ref.startswith(("https://", "http://")):
            account, name = urlparse(ref).path.strip("/").split("/")[-2:]
            region = queue_url_place(ref)[1] or self.region
            return f"arn:{partition(region)}:sqs:{region}:{account}:{name}"
        return f"arn:{self.partition}:sqs:{self.region}:{self._account(f'queue {ref}')}:{ref}"

    @staticmethod
    def neighbours(queue_arn: str) -> str:
        """Every queue in the queue's account and region: redrive sources live there."""
        return queue_arn.rsplit(":", 1)[0] + ":*"

    def event_bus(self, ref: str) -> str:
        if ref.startswith("arn:"):
            return ref
        account = self._account(f"event bus {ref}")
        return f"arn:{self.partition}:events:{self.region}:{account}:event-bus/{ref}"

    def table(self, ref: str) -> str:
        if ref.startswith("arn:"):
            return ref
        account = self._account(f"table {ref}")
        return f"arn:{self.partition}:dynamodb:{self.region}:{account}:table/{ref}"

    def function(self, ref: str) -> str:
        """A function ARN, qualifier kept: a qualified invoke needs the qualified ARN."""
        if ref.startswith("arn:"):
            return ref
        account = self._account(f"function {ref}")
        return f"arn:{self.partition}:lambda:{self.region}:{account}:function:{ref}"


def target_statements(
    queue: QueueSettings, dlq: str, arns: Arns, sources: list[str] | None
) -> list[tuple[str, str, str]]:
    """(sid, action, resource) for a queue's target."""
    t = queue.target
    if isinstance(t, LambdaTarget):
        return [("InvokeTargets", "lambda:InvokeFunction", arns.function(t.function))]
    if isinstance(t, StepFunctionsTarget):
        rows = [("StartExecutions", "states:StartExecution", t.state_machine_arn)]
        if t.wait_for_completion:
            executions = executions_of(t.state_machine_arn)
            rows.append(("WatchExecutions", "states:DescribeExecution", executions))
            if t.on_failed_execution == "redrive":
                rows.append(("RedriveExecutions", "states:RedriveExecution", executions))
        return rows
    if isinstance(t, AutoTarget):
        return _auto_statements(t)
    if isinstance(t, EventBridgeTarget):
        return [("PutEventsToBuses", "events:PutEvents", arns.event_bus(t.event_bus))]
    if isinstance(t, SnsTarget):
        return [("PublishToTopics", "sns:Publish", t.topic_arn)]
    assert isinstance(t, SqsTarget)
    if t.queue:
        return [("SendToTargets", a, arns.queue(t.queue)) for a in SEND_ACTIONS]
    # `source: true`: the sources are discovered at run time (ListDeadLetterSourceQueues).
    resources = sources if sources is not None else [arns.neighbours(dlq)]
    return [("SendToSourceQueues", a, r) for a in SEND_ACTIONS for r in resources]


def _auto_statements(t: AutoTarget) -> list[tuple[str, str, str]]:
    """Exactly what `allow` names, per service."""
    rows = []
    for pattern in t.allow:
        service = pattern.split(":")[2] if pattern.count(":") >= 5 else ""
        rows += [("AutoTargets", action, pattern) for action in AUTO_ACTIONS.get(service, ())]
        if service == "states":  # a status-change event's execution is redriven
            rows += [("AutoRedrives", a, executions_of(pattern)) for a in REDRIVE_ACTIONS]
    return rows


def build_policy(
    settings: Settings,
    account: str | None = None,
    sources: dict[str, list[str]] | None = None,
    member: str | None = None,
) -> dict[str, Any]:
    """`sources`, when given (`--resolve-sources`), maps configured queue names to their
    redrive sources' ARNs: the redrive grants then name exactly those queues. `member`: the
    role of that member account (`accounts:`), covering exactly what lives there; else the
    deployment's role (its own queues, coordination, sinks, and the member roles to assume)."""
    if member is not None and member not in {a.id for a in settings.accounts}:
        raise PolicyError(f"--account {member} is not among `accounts`")
    account = member or account
    grants: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for name, queue, discovered in policy_queues(settings, member):
        if discovered:
            grants["ListQueuesForDiscovery"]["sqs:ListQueues"].add("*")
        # where the queue lives: its region (and the member's account)
        arns = Arns(queue.region or settings.aws.region, account)
        known = sources.get(name) if sources is not None else None
        grant_queue(settings, queue, arns, known, grants)
    if member is None:  # the deployment's own: coordination, sinks, the member roles
        arns = Arns(settings.aws.region, account)
        grant_coordination(settings, arns, grants)
        grant_notifications(settings, arns, grants)
        assume_grants(settings, grants)
    if settings.aws.kms_key_arns:
        for action in ("kms:Decrypt", "kms:GenerateDataKey"):
            grants["UseQueueKeys"][action].update(settings.aws.kms_key_arns)
    return {"Version": "2012-10-17", "Statement": statements(grants)}


def grant_queue(
    settings: Settings,
    queue: QueueSettings,
    arns: Arns,
    known: list[str] | None,
    grants: dict[str, dict[str, set[str]]],
) -> None:
    """One queue's DLQ, parking queue, redrive sources, target and hook."""
    dlq = arns.queue(queue.queue_ref)
    for action in DLQ_ACTIONS:
        grants["ReadDeadLetterQueues"][action].add(dlq)
    grant_parking(settings, arns.queue(queue.policy.parking_queue or ""), grants)
    # Attempt counting reads each redrive source's maxReceiveCount; the sources are
    # found at run time, so this read-only grant covers the account's queues in the region.
    for source in known if known is not None else [arns.neighbours(dlq)]:
        grants["ReadRedriveSources"]["sqs:GetQueueAttributes"].add(source)
    for sid, action, resource in target_statements(queue, dlq, arns, known):
        grants[sid][action].add(resource)
    if isinstance(queue.hook, LambdaHookSpec):  # a Lambda that decides (SPEC.md, Decisions)
        grants["InvokeHooks"]["lambda:InvokeFunction"].add(arns.function(queue.hook.function))


def grant_parking(settings: Settings, parking: str, grants: dict[str, dict[str, set[str]]]) -> None:
    for action in SEND_ACTIONS:
        grants["WriteParkingQueues"][action].add(parking)
    if settings.keeper.enabled:  # it reads each parking queue and re-parks what is due
        for action in KEEPER_ACTIONS:
            grants["KeepParkedMessages"][action].add(parking)


def grant_coordination(
    settings: Settings, arns: Arns, grants: dict[str, dict[str, set[str]]]
) -> None:
    coordination = settings.coordination
    if coordination.backend == "dynamodb" and coordination.table:
        table = arns.table(coordination.table)
        for action in TABLE_ACTIONS:
            grants["CoordinationTable"][action].add(table)


def grant_notifications(
    settings: Settings, arns: Arns, grants: dict[str, dict[str, set[str]]]
) -> None:
    """Exactly the configured sinks (SPEC.md, Notifications); a webhook needs nothing of AWS."""
    for sink in settings.notify.sinks:
        if sink.sns is not None:
            grants["SendDigests"]["sns:Publish"].add(sink.sns.topic_arn)
        if sink.eventbridge is not None:
            grants["SendDigests"]["events:PutEvents"].add(arns.event_bus(sink.eventbridge.bus))


def statements(grants: dict[str, dict[str, set[str]]]) -> list[dict[str, Any]]:
    """One statement per Sid and resource set, actions and resources sorted."""
    out = []
    for sid in sorted(grants):
        by_resources: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for action, granted in grants[sid].items():
            by_resources[tuple(sorted(granted))].append(action)
        for index, (resources, actions) in enumerate(sorted(by_resources.items())):
            out.append(
                {
                    "Sid": sid if index == 0 else f"{sid}{index + 1}",
                    "Effect": "Allow",
                    "Action": sorted(actions),
                    "Resource": list(resources),
                }
            )
    return out


def render(
    settings: Settings,
    account: str | None = None,
    sources: dict[str, list[str]] | None = None,
    member: str | None = None,
) -> str:
    return json.dumps(build_policy(settings, account, sources, member), indent=2) + "\n"


async def resolve_sources(settings: Settings) -> dict[str, list[str]]:
    """Each configured queue's redrive sources, asked of AWS (ListDeadLetterSourceQueues)."""
    found: dict[str, list[str]] = {}
    async with AsyncExitStack() as stack:
        clients = Clients(settings.aws, stack, pool=4, accounts=settings.accounts)
        for name, queue in settings.queues.items():
            sqs = await clients.of(queue).get("sqs")  # asked where the queue lives
            url = await resolve_queue_url(sqs, queue.queue_ref)
            found[name] = sorted(await redrive_sources(sqs, url))
    return found
