"""The plain sections of the settings tree and the base model every section uses (pure)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


class KeeperSettings(Model):
    """Keeping parked messages past the parking queue's retention (SPEC.md, Keeping parked
    messages)."""

    enabled: bool = True
    # re-park this long before the retention ends (the keeper uses at most half the retention)
    margin_seconds: Annotated[float, Field(ge=30, le=1_209_600)] = 172_800
    interval_seconds: Annotated[float, Field(ge=5, le=86_400)] = 21_600

    @model_validator(mode="after")
    def _checked_twice_within_the_margin(self) -> KeeperSettings:
        if self.interval_seconds > self.margin_seconds / 2:
            raise ValueError(
                f"interval_seconds ({self.interval_seconds:g}) must be at most half of "
                f"margin_seconds ({self.margin_seconds:g}): a message must be checked at least "
                "twice before its end"
            )
        return self


class OperatorSettings(Model):
    """The operator commands and the console (SPEC.md, Keeping parked messages)."""

    # Where backups and exports go by default: a directory, or `s3://bucket/prefix` (a
    # laptop's disk or a pod's emptyDir dies; a bucket does not). None: the working directory.
    backup_dir: str | None = None

    @model_validator(mode="after")
    def _s3_or_a_path(self) -> OperatorSettings:
        where = self.backup_dir
        if where is not None and where.startswith("s3://"):
            bucket, _, _ = where.removeprefix("s3://").partition("/")
            if not bucket:
                raise ValueError(f"backup_dir {where!r}: an S3 prefix is s3://bucket/prefix")
        return self


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
