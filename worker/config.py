"""Loading the layered configuration: base → env → --config files → environment variables.

The only module that reads the process environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from worker.settings import TARGET_KINDS, Settings, deep_merge
from worker.validation import cross_field_errors

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


def _read_yaml(path: Path, *, required: bool) -> dict[str, Any]:
    if not path.exists():
        if required:
            raise ConfigError([f"{path}: file not found"])
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping"])
    return data


def _format(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc: list[str] = []
        for part in map(str, err["loc"]):
            # Drop pydantic's union-branch names (`target.lambda.function` reads as the YAML
            # does: `target.function`).
            if loc and loc[-1] == "target" and part in TARGET_KINDS:
                continue
            loc.append(part)
        message = err["msg"].removeprefix("Value error, ")
        out.append(f"{'.'.join(loc) or '<root>'}: {message}")
    return out


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
    for index, path in enumerate(files):
        # base.yaml may be absent (config purely from --config); named files must exist.
        merged = deep_merge(merged, _read_yaml(path, required=index > 0))
    errors = _check_env_vars(environ)
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(errors + _format(exc)) from exc
    errors += cross_field_errors(settings)
    if errors:
        raise ConfigError(errors)
    return settings
