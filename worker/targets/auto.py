"""`kind: auto`: deliver to the target the message itself names — a Lambda record's function,
an EventBridge DLQ's `TARGET_ARN` (called directly: re-publishing to the bus would re-match
every rule), the SQS queue that dead-lettered it, the Standard execution an EventBridge "Step
Functions Execution Status Change" event names (FAILED, TIMED_OUT or ABORTED: redriven from
the state that failed) — but only when that ARN (for an execution, its state machine's) matches
the queue's `allow` patterns. Anything else is parked with its reason; a target outside
`allow` is never called. The generic retrier, with least privilege.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from worker.aws.clients import Clients
from worker.aws.sqs import RedriveSource
from worker.core.envelope import DlqMessage
from worker.core.errors import DeliveryError, ErrorKind
from worker.core.failure import parse_failure
from worker.settings import (
    AutoTarget,
    LambdaTarget,
    SnsTarget,
    SqsTarget,
    StepFunctionsTarget,
)
from worker.targets.base import Delivery, HandOff, Result, Target
from worker.targets.lambda_ import LambdaInvoker
from worker.targets.sfn_redrive import StepFunctionsRedriver
from worker.targets.sns import SnsPublisher
from worker.targets.sqs import SqsSender
from worker.targets.stepfunctions import StepFunctionsStarter


def _park(code: str, reason: str, detail: str = "") -> DeliveryError:
    return DeliveryError(ErrorKind.PERMANENT, code, detail, park_reason=reason)


def allowed(arn: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(arn, pattern) for pattern in patterns)


class AutoDispatcher(HandOff):
    service = "auto"
    operation = "Deliver"
    one_per_call = True  # it may resolve to Lambda or Step Functions

    def __init__(
        self, clients: Clients, settings: AutoTarget, sources: Mapping[str, RedriveSource]
    ) -> None:
        self._clients = clients
        self._allow = settings.allow
        self._sources = sources
        self._targets: dict[tuple[str, bool], Target] = {}
        self.name = "auto"
        self.hands_off = True  # the named target's own failure path may send it back

    async def _target(self, arn: str, redrive: bool) -> Target | None:
        """The target for `arn`; with `redrive`, the machine whose execution is redriven."""
        if (arn, redrive) not in self._targets:
            service = arn.split(":")[2] if arn.count(":") >= 5 else ""
            get = self._clients.get
            if redrive:
                self._targets[arn, redrive] = StepFunctionsRedriver(await get("stepfunctions"), arn)
            elif service == "lambda":
                self._targets[arn, redrive] = LambdaInvoker(
                    await get("lambda"), LambdaTarget(kind="lambda", function=arn)
                )
            elif service == "sqs":
                settings = SqsTarget(kind="sqs", queue=arn)
                self._targets[arn, redrive] = SqsSender(await get("sqs"), settings, self._sources)
            elif service == "states":
                settings_sf = StepFunctionsTarget(kind="stepfunctions", state_machine_arn=arn)
                client = await get("stepfunctions")
                self._targets[arn, redrive] = StepFunctionsStarter(client, settings_sf)
            elif service == "sns" and arn.count(":") == 5:  # a topic, not a subscription
                self._targets[arn, redrive] = SnsPublisher(
                    await get("sns"), SnsTarget(kind="sns", topic_arn=arn)
                )
            else:
                return None
        return self._targets[arn, redrive]

    def loop_seen(self, message: DlqMessage) -> tuple[str, str]:
        """The target and the payload the message names: an envelope (a Lambda destination
        record, a status-change event) is new each time — its id, its time — while what it
        sends back is the same (for a status-change event, the execution). A status-change
        event counts by its own `id`: EventBridge may deliver one event twice, and a
        duplicate is not a second failure."""
        event = parse_failure(message)
        if not event.replayable or event.target_arn is None:
            # parked, never sent: it spends no one's loop budget
            return message.body, message.message_id
        identity = f"event:{event.event_id}" if event.event_id else message.message_id
        return f"{event.target_arn}\n{event.payload}", identity

    def _route(self, delivery: Delivery) -> DeliveryError | tuple[tuple[str, bool], Delivery]:
        """Where a message goes ((target ARN, redrive?) and the delivery as the target takes
        it), or why it is parked."""
        event = parse_failure(delivery.message)
        if not event.replayable:
            return _park("NotReplayable", "not_replayable", event.shape)
        if event.target_arn is None:
            return _park("NoTargetNamed", "no_target", event.shape)
        if not allowed(event.target_arn, self._allow):
            return _park("TargetNotAllowed", "target_not_allowed", event.target_arn)
        # Replay the payload as the target first received it; producer attributes of an
        # envelope (EventBridge's RULE_ARN…, Lambda's RequestID…) stay behind. A queue's
        # transform or hook may have made the payload (`delivery.payload`).
        message = delivery.message
        if event.shape != "sqs_redrive":
            message = dataclasses.replace(message, body=event.payload, attributes={})
        redrive = event.shape == "sfn_execution"
        if redrive:  # the event as it came: the execution it names, never a transform's
            return (event.target_arn, redrive), dataclasses.replace(delivery, payload=None)
        return (event.target_arn, redrive), dataclasses.replace(delivery, message=message)

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        results: list[Result] = [None] * len(batch)
        groups: dict[tuple[str, bool], list[tuple[int, Delivery]]] = defaultdict(list)
        for index, delivery in enumerate(batch):
            routed = self._route(delivery)
            if isinstance(routed, DeliveryError):
                results[index] = routed
            else:
                groups[routed[0]].append((index, routed[1]))
        for (arn, redrive), members in groups.items():
            target = await self._target(arn, redrive)
            if target is None:
                for index, _ in members:
                    results[index] = _park("TargetNotSupported", "target_not_supported", arn)
                continue
            outcomes = await target.deliver([d for _, d in members])
            for (index, _), outcome in zip(members, outcomes, strict=True):
                results[index] = outcome
        return results
