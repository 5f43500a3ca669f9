"""What a queue delivers to: one model per target kind (SPEC.md, Target kinds and their keys)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from worker.settings.sections import CircuitBreakerSettings, Model, RateLimitSettings


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
    # With wait_for_completion: after a FAILED, TIMED_OUT or ABORTED execution, the next
    # attempt resumes it at the state that failed (`redrive`) or starts it anew (`restart`).
    on_failed_execution: Literal["redrive", "restart"] = "redrive"

    @model_validator(mode="after")
    def _only_when_waiting(self) -> StepFunctionsTarget:
        # `restart` asks for something that cannot happen without waiting (the default,
        # `redrive`, is what a resolved configuration prints: it must load again)
        if self.on_failed_execution == "restart" and not self.wait_for_completion:
            raise ValueError(
                "`on_failed_execution: restart` applies only with `wait_for_completion: true` "
                "(without waiting, an execution's failure is the state machine's to handle)"
            )
        return self


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
