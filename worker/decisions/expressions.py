"""The rules and the transform of one queue, compiled once (JMESPath; pure).

- A rule's `when` is truthy in JMESPath's sense (not false, null, "", [] or {}). A `when` that
  fails to evaluate (a function given the wrong type) parks the message `rule_failed`: a rule
  meant to hold a message back must not let it through because the message surprised it.
- The transform's result is the payload: a string as is, any other JSON value compact. A null
  result or an evaluation error parks `transform_failed`; nothing half-made is delivered.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.visitor import TreeInterpreter

from worker.settings import Rule

# One interpreter for every search (JMESPath's own functions, nothing custom): `search()`
# builds a new one, with its function table, on every call — most of a short search's cost.
# It keeps no state between visits, so sharing it is safe.
INTERPRETER = TreeInterpreter(jmespath.Options())


class ExpressionFailed(Exception):
    """An expression could not be evaluated on this message; `code` names why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def _search(expression: Any, data: Any, family: str) -> Any:
    try:
        return INTERPRETER.visit(expression.parsed, data)
    except JMESPathError as exc:
        detail = " ".join(str(exc).split())
        raise ExpressionFailed(f"{family}.{type(exc).__name__}", detail) from exc
    except Exception as exc:  # any surprise is this message's failure, not the loop's
        raise ExpressionFailed(f"{family}.{type(exc).__name__}", str(exc)) from exc


def truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null and empty strings, lists and objects are false."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


def as_payload(value: Any) -> str:
    """A JSON value as the text a target receives. Raises ValueError for what no target can
    take: a value JSON cannot hold (a datetime, a Decimal, bytes, NaN, a cycle), one nested
    too deeply, or text that is not UTF-8 (a lone surrogate)."""
    try:
        if isinstance(value, str):
            text = value
        else:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"not a payload: {type(exc).__name__}: {str(exc)[:200]}") from exc
    return text


@dataclass(frozen=True)
class CompiledRule:
    index: int
    rule: Rule
    expression: Any

    def matches(self, view: Any) -> bool:
        return truthy(_search(self.expression, view, "RuleFailed"))


def compile_rules(rules: Sequence[Rule]) -> tuple[CompiledRule, ...]:
    return tuple(CompiledRule(i, r, jmespath.compile(r.when)) for i, r in enumerate(rules))


class Transform:
    def __init__(self, text: str) -> None:
        self.text = text
        self._expression = jmespath.compile(text)

    def apply(self, view: Any) -> str:
        """The new payload; raises ExpressionFailed (`TransformFailed.*`)."""
        result = _search(self._expression, view, "TransformFailed")
        if result is None:
            raise ExpressionFailed("TransformFailed.NullResult", f"{self.text!r} gave null")
        try:
            return as_payload(result)
        except ValueError as exc:
            raise ExpressionFailed("TransformFailed.InvalidPayload", str(exc)) from exc
