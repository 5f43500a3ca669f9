"""Validation rules that span several keys, each reported as `path.to.key: message` (pure)."""

from __future__ import annotations

from pydantic import ValidationError

from worker.settings import VISIBILITY_LIMIT_SECONDS, QueueSettings, Settings


def cross_field_errors(settings: Settings) -> list[str]:
    """Rules that span several keys, each as `path.to.key: message`."""
    errors: list[str] = []
    waits = [("defaults", settings.defaults)] + [
        (f"queues.{name}", q) for name, q in settings.queues.items()
    ]
    for path, q in waits:
        if settings.aws.read_timeout_seconds <= q.receive.wait_seconds:
            errors.append(
                f"aws.read_timeout_seconds: must exceed {path}.receive.wait_seconds "
                f"({settings.aws.read_timeout_seconds} <= {q.receive.wait_seconds})"
            )
        backoff = q.policy.backoff
        if backoff.max_seconds > VISIBILITY_LIMIT_SECONDS:
            errors.append(
                f"{path}.policy.backoff.max_seconds: must be <= {VISIBILITY_LIMIT_SECONDS} "
                "(the SQS visibility timeout limit)"
            )
        if backoff.initial_seconds > backoff.max_seconds:
            errors.append(f"{path}.policy.backoff.initial_seconds: must be <= max_seconds")
    errors += _shared_target_errors(settings) + _discovery_errors(settings)
    for name, q in settings.queues.items():
        if q.circuit_breaker.minimum_calls > q.circuit_breaker.window:
            errors.append(f"queues.{name}.circuit_breaker.minimum_calls: must be <= window")
        if q.circuit_breaker.open_seconds > q.circuit_breaker.max_open_seconds:
            errors.append(
                f"queues.{name}.circuit_breaker.open_seconds: must be <= max_open_seconds"
            )
        if not q.policy.parking_queue:
            errors.append(
                f"queues.{name}.policy.parking_queue: required (set it on the queue or in "
                "defaults.policy.parking_queue)"
            )
        if set(q.policy.retry_on) & set(q.policy.park_on):
            errors.append(f"queues.{name}.policy.park_on: overlaps retry_on")
    return errors


def _shared_target_errors(settings: Settings) -> list[str]:
    """Queues that name the same target share its bucket and breaker: they must agree."""
    errors: list[str] = []
    first: dict[str, tuple[str, QueueSettings]] = {}
    for name, q in settings.queues.items():
        if q.target_key not in first:
            first[q.target_key] = (name, q)
            continue
        other_name, other = first[q.target_key]
        if q.effective_rate_limit != other.effective_rate_limit:
            errors.append(
                f"queues.{name}.target.rate_limit: differs from queues.{other_name} "
                "(queues feeding the same target share one token bucket)"
            )
        if q.effective_circuit_breaker != other.effective_circuit_breaker:
            errors.append(
                f"queues.{name}.target.circuit_breaker: differs from queues.{other_name} "
                "(queues feeding the same target share one circuit breaker)"
            )
    return errors


def _discovery_errors(settings: Settings) -> list[str]:
    """Discovered queues are built at run time: check their settings now, at boot."""
    discovery = settings.discovery
    if discovery is None:
        return []
    defaults = settings.defaults.model_dump(mode="json")
    try:
        queue = discovery.queue_for(f"{discovery.prefix}example", defaults)
    except ValidationError as exc:
        return [
            f"discovery.defaults.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors()
        ]
    errors = []
    if queue.target.kind != "auto":
        errors.append("discovery.defaults.target.kind: discovered queues need `kind: auto`")
    if not queue.policy.parking_queue:
        errors.append("discovery.defaults.policy.parking_queue: required")
    elif queue.policy.parking_queue.rsplit("/", 1)[-1].startswith(discovery.prefix):
        errors.append(
            "discovery.defaults.policy.parking_queue: starts with the discovery prefix "
            "(it would be served as a DLQ)"
        )
    return errors
