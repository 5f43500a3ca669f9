"""A queue's decisions: rules, a transform and a hook (SPEC.md, Decisions).

Every expression is compiled here, when the configuration loads: a syntax error is a
configuration error at its key (`queues.orders.rules[0].when: …`). Whether a Python hook
imports is checked by `worker.config` when it loads the files (`load_hook` runs user code).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from worker.settings.sections import VISIBILITY_LIMIT_SECONDS, Model

REASON_PATTERN = r"^[a-z0-9_]{1,40}$"
HOOK_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


def compiled(text: str) -> str:
    """A JMESPath expression that compiles (the text is kept; `jmespath` caches the parse)."""
    try:
        jmespath.compile(text)
    except JMESPathError as exc:
        detail = " ".join(str(exc).split())
        raise ValueError(f"not a valid JMESPath expression: {detail}") from exc
    return text


Expression = Annotated[str, Field(min_length=1), AfterValidator(compiled)]
Reason = Annotated[str, Field(pattern=REASON_PATTERN)]


class Rule(Model):
    """`when` is truthy → `action`. The first matching rule decides."""

    when: Expression
    action: Literal["park", "defer", "deliver"]
    # What the rule is about, shown instead of its position: a message it parks carries the
    # error `Rule.<name>` (`Rule.<index>` without one). Unique within the queue.
    name: Reason | None = None
    reason: Reason | None = None  # park: required; defer: shown in logs (default `deferred`)
    delay_seconds: Annotated[int, Field(ge=1, le=VISIBILITY_LIMIT_SECONDS)] | None = None

    @model_validator(mode="after")
    def _keys_of_action(self) -> Rule:
        if self.action == "park" and self.reason is None:
            raise ValueError("`reason` is required for action park")
        if self.action == "defer" and self.delay_seconds is None:
            raise ValueError("`delay_seconds` is required for action defer")
        if self.action != "defer" and self.delay_seconds is not None:
            raise ValueError("`delay_seconds` is only for action defer")
        if self.action == "deliver" and self.reason is not None:
            raise ValueError("`reason` is not used by action deliver")
        return self


class LambdaHookSpec(Model):
    """`hook: {lambda: FUNCTION}`: the function decides, answering JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    function: Annotated[str, Field(alias="lambda", min_length=1)]


def _one_hook(value: Any) -> Any:
    """One clear error for either form (a union would report both branches)."""
    if value is None or isinstance(value, LambdaHookSpec):
        return value
    if isinstance(value, str):
        if re.fullmatch(HOOK_PATTERN, value) is None:
            raise ValueError("a Python hook is `package.module:function`")
        return value
    if isinstance(value, dict):
        try:
            return LambdaHookSpec.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "hook"
            raise ValueError(f"`{where}`: {first['msg']}") from None
    raise ValueError("`package.module:function` or `{lambda: FUNCTION}`")


class DecisionSettings(Model):
    """Evaluated for every delivery after the attempt and age gate: rules → transform →
    hook → delivery."""

    rules: tuple[Rule, ...] = ()
    transform: Expression | None = None
    hook: Annotated[str | LambdaHookSpec | None, BeforeValidator(_one_hook)] = None
    hook_timeout_seconds: Annotated[float, Field(gt=0, le=900)] = 5
    idempotency_key: Expression | None = None

    @model_validator(mode="after")
    def _rule_names_once(self) -> DecisionSettings:
        names = [rule.name for rule in self.rules if rule.name]
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"rule names must differ: {', '.join(twice)} names two rules")
        if numbers := [n for n in names if n.isdigit()]:
            raise ValueError(
                f"rule name {numbers[0]}: a name has a letter (Rule.<number> is an unnamed "
                "rule's position)"
            )
        return self

    @property
    def decides(self) -> bool:
        """Whether anything here can change what is delivered."""
        return bool(self.rules) or self.transform is not None or self.hook is not None


def python_hook(spec: str) -> tuple[str, str]:
    """`package.module:function` → (module, function)."""
    module, _, function = spec.partition(":")
    return module, function


def load_hook(spec: str) -> Callable[..., Any]:
    """The function named `package.module:function`; raises ValueError saying why not."""
    module_name, function_name = python_hook(spec)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"{module_name} has no function {function_name}")
    return function  # type: ignore[no-any-return]


def valid_reason(reason: object) -> bool:
    return isinstance(reason, str) and re.fullmatch(REASON_PATTERN, reason) is not None
