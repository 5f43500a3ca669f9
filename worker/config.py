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
    TARGET_KINDS,
    VISIBILITY_LIMIT_SECONDS,
    QueueSettings,
    Settings,
    deep_merge,
)
from worker.settings.decisions import load_hook
from worker.settings.keys import KeyPath, key_lines, unknown_keys

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


class Layer:
    """One configuration file as read: its data and where each key is."""

    def __init__(self, path: Path, data: dict[str, Any], lines: dict[KeyPath, int]) -> None:
        self.path, self.data, self.lines = path, data, lines

    def unknown(self) -> list[str]:
        """`file:line: path: unknown key `k` (did you mean `key`?)`, once per place."""
        out = []
        for where, close in unknown_keys(self.data, Settings):
            hint = f" (did you mean `{close}`?)" if close else ""
            out.append(f"{self.place(where)}{dotted(where)}: unknown key `{where[-1]}`{hint}")
        return out

    def place(self, where: KeyPath) -> str:
        """`file:line: ` of the key, or of its nearest parent in this file."""
        for end in range(len(where), 0, -1):
            line = self.lines.get(where[:end])
            if line is not None:
                return f"{self.path}:{line}: "
        return f"{self.path}: "


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


def dotted(where: Sequence[str]) -> str:
    """A key path as the YAML reads: `queues.orders.rules[0].when`."""
    out: list[str] = []
    for part in where:
        if part.isdigit() and out:
            out[-1] += f"[{part}]"
        else:
            out.append(part)
    return ".".join(out) or "<root>"


def _format(exc: ValidationError, layers: Sequence[Layer], reported: set[KeyPath]) -> list[str]:
    """Each error once, at the place it was written: the last file that sets the key (or its
    nearest parent); a key a queue inherited from `defaults` is reported there, once. Unknown
    keys the files' walk `reported` already are not said twice."""
    out: list[str] = []
    for err in exc.errors():
        loc: list[str] = []
        for part in err["loc"]:
            # Drop pydantic's union-branch names (`target.lambda.function` reads as the YAML
            # does: `target.function`).
            if loc and loc[-1] == "target" and part in TARGET_KINDS:
                continue
            loc.append(str(part))
        where = tuple(loc)
        if err["type"] == "extra_forbidden" and _inherited(where, layers) in reported:
            continue
        where = _inherited(where, layers)
        message = err["msg"].removeprefix("Value error, ")
        layer = next((x for x in reversed(layers) if _sets(x, where)), None)
        line = f"{layer.place(where) if layer else ''}{dotted(where)}: {message}"
        if line not in out:
            out.append(line)
    return out


def _sets(layer: Layer, where: KeyPath) -> bool:
    return any(where[:end] in layer.lines for end in range(len(where), 0, -1))


def _inherited(where: KeyPath, layers: Sequence[Layer]) -> KeyPath:
    """`queues.<q>.<rest>` as `defaults.<rest>` when no file sets it on the queue itself but
    one sets it under `defaults` (the queue inherited it)."""
    if len(where) < 3 or where[0] != "queues":
        return where
    inherited = ("defaults", *where[2:])
    on_queue = any(where in x.lines for x in layers)
    in_defaults = any(inherited in x.lines for x in layers)
    return inherited if in_defaults and not on_queue else where


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
    unknown = [line for layer in layers for line in layer.unknown()]
    reported = {w for layer in layers for w, _ in unknown_keys(layer.data, Settings)}
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(errors + unknown + _format(exc, layers, reported)) from exc
    if unknown:
        raise ConfigError(errors + unknown)
    errors += cross_field_errors(settings)
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
