"""The targets: one small module per kind (`build_target` picks it from the settings), and
the guard that protects a target (its token bucket and circuit breaker) with the one delivery
step every caller uses: admit through the guard, deliver, record.

May import: `worker.aws`, `worker.core`, `worker.settings`, `worker.metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping

from worker.aws.clients import Clients
from worker.aws.sqs import RedriveSource
from worker.settings import (
    AutoTarget,
    EventBridgeTarget,
    LambdaTarget,
    QueueSettings,
    SnsTarget,
    StepFunctionsTarget,
)
from worker.targets.auto import AutoDispatcher
from worker.targets.base import Target
from worker.targets.eventbridge import EventBridgePublisher
from worker.targets.lambda_ import LambdaInvoker
from worker.targets.sns import SnsPublisher
from worker.targets.sqs import SqsSender
from worker.targets.stepfunctions import StepFunctionsStarter


async def build_target(
    queue: QueueSettings, clients: Clients, sources: Mapping[str, RedriveSource]
) -> Target:
    settings = queue.target
    if isinstance(settings, LambdaTarget):
        return LambdaInvoker(await clients.get("lambda"), settings)
    if isinstance(settings, StepFunctionsTarget):
        return StepFunctionsStarter(await clients.get("stepfunctions"), settings)
    if isinstance(settings, EventBridgeTarget):
        return EventBridgePublisher(await clients.get("events"), settings)
    if isinstance(settings, AutoTarget):
        return AutoDispatcher(clients, settings, sources)
    if isinstance(settings, SnsTarget):
        return SnsPublisher(await clients.get("sns"), settings)
    return SqsSender(await clients.get("sqs"), settings, sources)
