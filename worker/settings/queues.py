"""One queue's settings: the defaults every queue inherits, a queue, discovered queues."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from worker.settings.decisions import DecisionSettings
from worker.settings.sections import (
    CircuitBreakerSettings,
    Model,
    PolicySettings,
    RateLimitSettings,
    ReceiveSettings,
)
from worker.settings.targets import (
    AutoTarget,
    EventBridgeTarget,
    LambdaTarget,
    SnsTarget,
    StepFunctionsTarget,
    Target,
)


class QueueDefaults(DecisionSettings):
    concurrency: Annotated[int, Field(ge=1, le=1000)] = 10
    receive: ReceiveSettings = ReceiveSettings()
    policy: PolicySettings = PolicySettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()


class QueueSettings(QueueDefaults):
    """One DLQ, after the `defaults` were merged under it (see `worker.config`)."""

    url: str | None = None
    name: str | None = None
    target: Target
    # Where it lives (SPEC.md, "Many accounts and regions"): a member account of `accounts`
    # (None: the deployment's own) and a region (None: `aws.region`). Its DLQ, parking queue
    # and targets resolve there unless given as full URLs or ARNs.
    account: Annotated[str, Field(pattern=r"^\d{12}$")] | None = None
    region: str | None = None

    @model_validator(mode="after")
    def _url_or_name(self) -> QueueSettings:
        if (self.url is None) == (self.name is None):
            raise ValueError("set exactly one of `url` or `name`")
        return self

    @property
    def queue_ref(self) -> str:
        return self.url or self.name or ""

    @property
    def target_key(self) -> str:
        """The target's identity: queues with the same key share one bucket and breaker. A
        name resolves where the queue lives (its place is part of the key); a full ARN or URL
        is the same target from anywhere."""
        key = self._target_key()
        if self.place and not key.split(":", 1)[1].startswith(("arn:", "https://", "http://")):
            return f"{self.place}/{key}"
        return key

    @property
    def place(self) -> str:
        """`<account>/<region>` of a queue that lives elsewhere; empty for the deployment's."""
        return f"{self.account or 'own'}/{self.region or ''}" if self.account or self.region else ""

    def _target_key(self) -> str:
        t = self.target
        if isinstance(t, LambdaTarget):
            return f"lambda:{t.function}"
        if isinstance(t, StepFunctionsTarget):
            return f"states:{t.state_machine_arn}"
        if isinstance(t, EventBridgeTarget):
            return f"events:{t.event_bus}"
        if isinstance(t, SnsTarget):
            return f"sns:{t.topic_arn}"
        if isinstance(t, AutoTarget):
            return f"auto:{self.queue_ref}"
        return f"sqs:{t.queue}" if t.queue else f"sqs-source:{self.queue_ref}"

    @property
    def effective_rate_limit(self) -> RateLimitSettings:
        return self.target.rate_limit or self.rate_limit

    @property
    def effective_circuit_breaker(self) -> CircuitBreakerSettings:
        return self.target.circuit_breaker or self.circuit_breaker


class DiscoverySettings(Model):
    """Serve every DLQ whose name starts with `prefix` (ListQueues), with `kind: auto`."""

    prefix: Annotated[str, Field(min_length=1)]
    refresh_seconds: Annotated[float, Field(ge=1)] = 300
    # member accounts (of `accounts`) to discover in too, in each of their regions
    accounts: tuple[str, ...] = ()
    # Queue settings for discovered queues (over `defaults`); `target` must be `kind: auto`.
    defaults: dict[str, Any] = {}

    def queue_for(
        self,
        name: str,
        defaults: dict[str, Any],
        *,
        url: str | None = None,
        account: str | None = None,
        region: str | None = None,
    ) -> QueueSettings:
        tree = deep_merge(defaults, self.defaults)
        where = {"account": account, "region": region}
        return QueueSettings.model_validate(
            {**tree, **({"url": url} if url else {"name": name}), **where}
        )


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Maps merge key by key; lists and scalars in `over` replace."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
