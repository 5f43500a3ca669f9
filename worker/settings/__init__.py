"""The settings tree: one frozen, validated model (SPEC.md, Configuration).

Pure: no AWS code. Loading and layering live in `worker.config`. The sections live in the
modules of this package; everything is importable from `worker.settings`.
"""

from __future__ import annotations

from typing import Any

from pydantic import model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from worker.settings.accounts import (
    AccountSettings,
    member_regions,
    parse_arn,
    partition_mismatch,
    partition_of,
    queue_url_place,
)
from worker.settings.decisions import DecisionSettings, LambdaHookSpec, Rule
from worker.settings.notify import NotifySettings, Sink
from worker.settings.queues import DiscoverySettings, QueueDefaults, QueueSettings, deep_merge
from worker.settings.sections import (
    LAMBDA_MAX_TIMEOUT_SECONDS,
    VISIBILITY_LIMIT_SECONDS,
    AwsSettings,
    BackoffSettings,
    CircuitBreakerSettings,
    CoordinationSettings,
    HttpSettings,
    KeeperSettings,
    LoggingSettings,
    MetricsSettings,
    Model,
    OperatorSettings,
    PolicySettings,
    RateLimitSettings,
    ReceiveSettings,
    ShutdownSettings,
)
from worker.settings.targets import (
    TARGET_KINDS,
    AutoTarget,
    EventBridgeTarget,
    LambdaTarget,
    SnsTarget,
    SqsTarget,
    StepFunctionsTarget,
    Target,
)

__all__ = [
    "LAMBDA_MAX_TIMEOUT_SECONDS",
    "TARGET_KINDS",
    "VISIBILITY_LIMIT_SECONDS",
    "AccountSettings",
    "AutoTarget",
    "AwsSettings",
    "BackoffSettings",
    "CircuitBreakerSettings",
    "CoordinationSettings",
    "DecisionSettings",
    "DiscoverySettings",
    "EventBridgeTarget",
    "HttpSettings",
    "KeeperSettings",
    "LambdaHookSpec",
    "LambdaTarget",
    "LoggingSettings",
    "MetricsSettings",
    "Model",
    "NotifySettings",
    "OperatorSettings",
    "PolicySettings",
    "QueueDefaults",
    "QueueSettings",
    "RateLimitSettings",
    "ReceiveSettings",
    "Rule",
    "Settings",
    "ShutdownSettings",
    "Sink",
    "SnsTarget",
    "SqsTarget",
    "StepFunctionsTarget",
    "Target",
    "deep_merge",
    "member_regions",
    "parse_arn",
    "partition_of",
    "queue_url_place",
]


def _members(accounts: tuple[AccountSettings, ...], home: str) -> dict[str, AccountSettings]:
    """The listed accounts by id: each once, each role in its regions' partition."""
    members = {a.id: a for a in accounts}
    if len(members) < len(accounts):
        raise ValueError("accounts: an account is listed twice")
    for listed in accounts:
        if (why := partition_mismatch(listed, home)) is not None:
            raise ValueError(f"accounts.{listed.id}: {why}")
    return members


def _url_agrees(name: str, queue: QueueSettings, home: str) -> None:
    """A queue given by URL says its account and region: they must be the queue's."""
    if queue.url is None or queue.account is None:  # the deployment's own: as it always was
        return
    account, region = queue_url_place(queue.url)
    if region is None:  # an endpoint of its own (a VPC endpoint, an emulator) says no region
        return
    if account != queue.account:
        raise ValueError(f"queues.{name}.url: a queue of account {account}, not of {queue.account}")
    if region != (queue.region or home):
        raise ValueError(f"queues.{name}.url: a queue in {region}, not in {queue.region or home}")


class Settings(BaseSettings):
    """The root. Environment variables `RETRY_WORKER_<SECTION>__<KEY>` win over files."""

    model_config = SettingsConfigDict(
        env_prefix="RETRY_WORKER_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    aws: AwsSettings = AwsSettings()
    http: HttpSettings = HttpSettings()
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    coordination: CoordinationSettings = CoordinationSettings()
    keeper: KeeperSettings = KeeperSettings()
    operator: OperatorSettings = OperatorSettings()
    notify: NotifySettings = NotifySettings()
    defaults: QueueDefaults = QueueDefaults()
    queues: dict[str, QueueSettings] = {}
    discovery: DiscoverySettings | None = None
    accounts: tuple[AccountSettings, ...] = ()

    @model_validator(mode="after")
    def _places_are_known(self) -> Settings:
        """A queue's account is one of `accounts`, in one of its regions."""
        members = _members(self.accounts, self.aws.region)
        for name, queue in self.queues.items():
            if queue.account is None:
                continue
            member = members.get(queue.account)
            if member is None:
                known = ", ".join(sorted(members)) or "none"
                raise ValueError(
                    f"queues.{name}.account: {queue.account} is not among `accounts` "
                    f"(listed: {known})"
                )
            regions = member_regions(member, self.aws.region)
            if (queue.region or self.aws.region) not in regions:
                raise ValueError(
                    f"queues.{name}.region: {queue.region or self.aws.region} is not among "
                    f"account {queue.account}'s regions ({', '.join(regions)})"
                )
        listed = self.discovery.accounts if self.discovery else ()
        if len(set(listed)) < len(listed):
            raise ValueError("discovery.accounts: an account is listed twice")
        for account in listed:
            if account not in members:
                raise ValueError(f"discovery.accounts: {account} is not among `accounts`")
        for name, queue in self.queues.items():
            _url_agrees(name, queue, self.aws.region)
        return self

    @model_validator(mode="before")
    @classmethod
    def _places_in_full(cls, data: Any) -> Any:
        """A queue's place as one spelling: a member's queue names its region (the
        deployment's when unset); the deployment's own region is no region at all. Two
        spellings of one place are one target identity (one bucket, one breaker)."""
        if not isinstance(data, dict) or not isinstance(data.get("queues"), dict):
            return data
        aws = data.get("aws")
        given = aws.get("region") if isinstance(aws, dict) else getattr(aws, "region", None)
        home = given or "us-east-1"
        queues = {}
        for name, queue in data["queues"].items():
            if isinstance(queue, dict) and queue.get("account"):
                queue = {**queue, "region": queue.get("region") or home}
            elif isinstance(queue, dict) and queue.get("region") == home:
                queue = {k: v for k, v in queue.items() if k != "region"}
            queues[name] = queue
        return {**data, "queues": queues}

    @model_validator(mode="before")
    @classmethod
    def _inherit_defaults(cls, data: Any) -> Any:
        """Every queue inherits `defaults`; the queue's own keys win (maps merge by key)."""
        if not isinstance(data, dict) or not isinstance(data.get("queues"), dict):
            return data
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            return data
        queues = {
            name: deep_merge(defaults, q) if isinstance(q, dict) else q
            for name, q in data["queues"].items()
        }
        return {**data, "queues": queues}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Files arrive as init kwargs; environment variables are the last layer and win.
        return (env_settings, init_settings)
