"""`notify:` (SPEC.md, Notifications): digests of parked and newly arrived messages, to SNS,
EventBridge or a webhook (pure)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from worker.settings.accounts import parse_arn
from worker.settings.sections import Model

Event = Literal["parked", "arrived"]


class SnsSink(Model):
    topic_arn: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[\w.-]+$")]

    @property
    def region(self) -> str:
        """The topic's region: SNS publishes only through its own region's endpoint."""
        arn = parse_arn(self.topic_arn)  # the field's pattern makes it one
        return arn.region if arn else ""


class EventBridgeSink(Model):
    bus: Annotated[str, Field(min_length=1, max_length=1600)] = "default"  # a name or an ARN

    @property
    def region(self) -> str | None:
        """A bus given by ARN: its region (PutEvents reaches a bus only in its own region);
        None for a name (the deployment's region)."""
        arn = parse_arn(self.bus)
        return arn.region or None if arn else None


class WebhookSink(Model):
    # The URL is a secret (a Slack webhook's path is its credential): read from this file at
    # each send, never written in the configuration, never logged.
    url_file: Annotated[str, Field(min_length=1)]
    format: Literal["slack", "json"] = "json"

    @field_validator("url_file")
    @classmethod
    def _a_path(cls, value: str) -> str:
        # The URL pasted here instead (with its scheme or without) would be quoted by every
        # failure to read it as a file: only an absolute path is taken, and never repeated.
        if "://" in value or not value.startswith("/"):
            raise ValueError(
                "the absolute path of a file that holds the webhook's URL (a Secret's file, "
                "e.g. /secrets/notify/url), not the URL itself: a secret is never in the "
                "configuration"
            )
        return value


class Sink(Model):
    """Exactly one of the three kinds."""

    sns: SnsSink | None = None
    eventbridge: EventBridgeSink | None = None
    webhook: WebhookSink | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Sink:
        given = [name for name in ("sns", "eventbridge", "webhook") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(
                "a sink is exactly one of sns, eventbridge or webhook"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def kind(self) -> str:
        """The sink's kind: its `sink` label (bounded)."""
        return "sns" if self.sns else "eventbridge" if self.eventbridge else "webhook"


class NotifySettings(Model):
    events: tuple[Event, ...] = ("parked", "arrived")
    # One digest per (event, queue, reason, error, error type) per window.
    window_seconds: Annotated[float, Field(ge=1, le=86_400)] = 60
    # `arrived`: a DLQ received new messages after this long without any.
    quiet_seconds: Annotated[float, Field(ge=0, le=30 * 86_400)] = 3600
    # Digests link to the console's page of the queue, filtered (e.g. https://retry.internal).
    console_url: Annotated[str, Field(pattern=r"^https?://")] | None = None
    # What the target said (the first error message of the window) in each digest. It may
    # quote the message (an amount, an address): false keeps it in the account, in the
    # console only.
    error_messages: bool = True
    sinks: tuple[Sink, ...] = ()
    # Digests waiting for each sink; more are dropped (and counted): a dead sink never holds
    # memory or the loop.
    queue_size: Annotated[int, Field(ge=1, le=10_000)] = 200
    # Tries of one digest (backoff 1 s, 2 s, 4 s, ... up to 60 s) before it is given up.
    attempts: Annotated[int, Field(ge=1, le=10)] = 5
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 10
