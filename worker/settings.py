"""The settings tree: one frozen, validated model (SPEC.md, Configuration).

Pure: no AWS code. Loading and layering live in `worker.config`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

VISIBILITY_LIMIT_SECONDS = 43_200  # SQS: a message can stay invisible at most 12 h
LAMBDA_MAX_TIMEOUT_SECONDS = 900

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AwsSettings(Model):
    region: str = "us-east-1"
    endpoint_url: str | None = None
    endpoint_urls: dict[str, str] = {}
    max_pool_connections: Annotated[int, Field(ge=1)] = 64
    sdk_max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    connect_timeout_seconds: PositiveFloat = 5
    read_timeout_seconds: PositiveFloat = 30
    # SSE-KMS keys of the queues (DLQs, targets, parking): only for `iam-policy`.
    kms_key_arns: tuple[str, ...] = ()

    def endpoint_for(self, service: str) -> str | None:
        return self.endpoint_urls.get(service, self.endpoint_url)


class HttpSettings(Model):
    host: str = "0.0.0.0"  # noqa: S104 - a container serves probes on every interface
    port: Annotated[int, Field(ge=0, le=65535)] = 8080


class LoggingSettings(Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = "json"
    log_bodies: bool = False


class MetricsSettings(Model):
    # DLQ depth gauges come from GetQueueAttributes; every call is billed, so slowly. 0: off.
    queue_depth_interval_seconds: NonNegativeFloat = 60


class ShutdownSettings(Model):
    grace_seconds: NonNegativeFloat = 25


class CoordinationSettings(Model):
    """Sharing budgets between the replicas of one deployment (SPEC.md, Coordination)."""

    backend: Literal["none", "dynamodb"] = "none"
    table: Annotated[str, Field(min_length=3, max_length=255)] | None = None
    heartbeat_seconds: Annotated[float, Field(ge=0.5, le=300)] = 10
    # Until the table has answered once, a replica assumes this many members (a replica that
    # boots while DynamoDB is down must not take the whole budget).
    members_when_unknown: Annotated[int, Field(ge=1, le=1000)] = 10

    @model_validator(mode="after")
    def _table_for_dynamodb(self) -> CoordinationSettings:
        if self.backend == "dynamodb" and not self.table:
            raise ValueError("`table` is required when `backend` is dynamodb")
        return self


class ReceiveSettings(Model):
    batch_size: Annotated[int, Field(ge=1, le=10)] = 10
    wait_seconds: Annotated[int, Field(ge=0, le=20)] = 20
    visibility_timeout_seconds: Annotated[int, Field(ge=1, le=VISIBILITY_LIMIT_SECONDS)] = 60
    # An idle queue is checked at least this often instead of long-polled; 0: always long-poll.
    idle_max_interval_seconds: NonNegativeFloat = 300


class BackoffSettings(Model):
    initial_seconds: NonNegativeFloat = 30
    multiplier: Annotated[float, Field(ge=1)] = 2.0
    max_seconds: NonNegativeFloat = 3600
    jitter: Literal["none", "full", "equal", "decorrelated"] = "full"


class PolicySettings(Model):
    max_attempts: Annotated[int, Field(ge=1)] = 5
    max_age_seconds: PositiveFloat | None = None
    backoff: BackoffSettings = BackoffSettings()
    retry_on: tuple[str, ...] = ()
    park_on: tuple[str, ...] = ()
    parking_queue: str | None = None


class RateLimitSettings(Model):
    per_second: PositiveFloat = 10.0
    burst: Annotated[int, Field(ge=1)] = 20


class CircuitBreakerSettings(Model):
    window: Annotated[int, Field(ge=1)] = 20
    minimum_calls: Annotated[int, Field(ge=1)] = 10
    failure_rate_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    open_seconds: PositiveFloat = 30
    max_open_seconds: PositiveFloat = 600
    half_open_probes: Annotated[int, Field(ge=1)] = 3


class TargetBase(Model):
    rate_limit: RateLimitSettings | None = None
    circuit_breaker: CircuitBreakerSettings | None = None


class LambdaTarget(TargetBase):
    kind: Literal["lambda"]
    function: str
    invocation_type: Literal["RequestResponse", "Event"] = "RequestResponse"


class StepFunctionsTarget(TargetBase):
    kind: Literal["stepfunctions"]
    state_machine_arn: str
    wait_for_completion: bool = False


class SqsTarget(TargetBase):
    kind: Literal["sqs"]
    queue: str | None = None
    source: bool = False

    @model_validator(mode="after")
    def _one_destination(self) -> SqsTarget:
        if (self.queue is None) == (not self.source):
            raise ValueError("set exactly one of `queue` (name or URL) or `source: true`")
        return self


class EventBridgeTarget(TargetBase):
    kind: Literal["eventbridge"]
    event_bus: str  # name or ARN


class SnsTarget(TargetBase):
    kind: Literal["sns"]
    topic_arn: str


class AutoTarget(TargetBase):
    """Deliver to the target the message itself names, only if it matches `allow`."""

    kind: Literal["auto"]
    allow: Annotated[tuple[str, ...], Field(min_length=1)]  # ARN patterns, `*` wildcards


TARGET_KINDS = ("lambda", "stepfunctions", "sqs", "eventbridge", "sns", "auto")
Target = Annotated[
    LambdaTarget | StepFunctionsTarget | SqsTarget | EventBridgeTarget | SnsTarget | AutoTarget,
    Field(discriminator="kind"),
]


class QueueDefaults(Model):
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
        """The target's identity: queues with the same key share one bucket and breaker."""
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
    # Queue settings for discovered queues (over `defaults`); `target` must be `kind: auto`.
    defaults: dict[str, Any] = {}

    def queue_for(
        self, name: str, defaults: dict[str, Any], *, url: str | None = None
    ) -> QueueSettings:
        tree = deep_merge(defaults, self.defaults)
        return QueueSettings.model_validate({**tree, **({"url": url} if url else {"name": name})})


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
    defaults: QueueDefaults = QueueDefaults()
    queues: dict[str, QueueSettings] = {}
    discovery: DiscoverySettings | None = None

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


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Maps merge key by key; lists and scalars in `over` replace."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
