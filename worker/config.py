"""Loading the layered configuration: base → env → --config files → environment variables,
then the rules that span several keys, each reported as `path.to.key: message`.

The only module that reads the process environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from worker.settings import (
    VISIBILITY_LIMIT_SECONDS,
    QueueSettings,
    Settings,
    deep_merge,
)
from worker.settings.decisions import load_hook
from worker.settings.keys import key_lines
from worker.settings.places import Layer, Places

ENV_VAR = "RETRY_WORKER_ENV"
CONFIG_DIR_VAR = "RETRY_WORKER_CONFIG_DIR"
# Variables with our prefix that are not settings keys.
_NOT_SETTINGS = {ENV_VAR, CONFIG_DIR_VAR}


class ConfigError(Exception):
    """The configuration is invalid; `errors` holds every `path.to.key: message`."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)


def config_files(env: str | None, extra: Sequence[str], environ: Mapping[str, str]) -> list[Path]:
    folder = Path(environ.get(CONFIG_DIR_VAR, "config"))
    env = env or environ.get(ENV_VAR) or None
    files = [folder / "base.yaml"]
    if env:
        files.append(folder / f"{env}.yaml")
    files.extend(Path(f) for f in extra)
    return files


def _read_yaml(path: Path, *, required: bool) -> Layer:
    if not path.exists():
        if required:
            raise ConfigError([f"{path}: file not found"])
        return Layer(path, {}, {})
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        lines = key_lines(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    if data is None:
        return Layer(path, {}, {})
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping"])
    return Layer(path, data, lines)


def _check_env_vars(environ: Mapping[str, str]) -> list[str]:
    """pydantic-settings ignores unknown top-level sections; a typo must fail at boot."""
    known = {name.upper() for name in Settings.model_fields}
    errors = []
    for var in environ:
        if not var.startswith("RETRY_WORKER_") or var in _NOT_SETTINGS:
            continue
        section = var.removeprefix("RETRY_WORKER_").split("__", 1)[0]
        if section not in known:
            errors.append(f"{var}: unknown setting section `{section.lower()}`")
    return errors


def load_settings(env: str | None = None, extra_files: Sequence[str] = ()) -> Settings:
    """Load, merge and validate; raise ConfigError with every problem found."""
    environ = os.environ
    files = config_files(env, extra_files, environ)
    merged: dict[str, Any] = {}
    layers = []
    for index, path in enumerate(files):
        # base.yaml may be absent (config purely from --config); named files must exist.
        layers.append(_read_yaml(path, required=index > 0))
        merged = deep_merge(merged, layers[-1].data)
    errors = _check_env_vars(environ)
    places = Places(layers, environ)
    unknown, reported = places.unknown()
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(errors + unknown + places.pydantic(exc, reported)) from exc
    if unknown:
        raise ConfigError(errors + unknown)
    errors += places.cross_field(cross_field_errors(settings))
    if errors:
        raise ConfigError(errors)
    return settings


# -- rules that span several keys (pure) -----------------------------------------------


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
    errors += _hook_errors(settings)
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


def _hook_errors(settings: Settings) -> list[str]:
    """A Python hook is imported at start-up: an import error fails the boot."""
    errors = []
    for name, q in settings.queues.items():
        if isinstance(q.hook, str):
            try:
                load_hook(q.hook)
            except ValueError as exc:
                errors.append(f"queues.{name}.hook: {exc}")
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
    if isinstance(queue.hook, str):
        try:
            load_hook(queue.hook)
        except ValueError as exc:
            errors.append(f"discovery.defaults.hook: {exc}")
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
