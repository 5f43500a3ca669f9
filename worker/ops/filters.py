"""Which parked messages a command acts on (pure).

`--match PATH=VALUE` looks into a JSON body: PATH is `$.a.b[0]` (or `a.b[0]`); the value found
there, as text (a string's own text, else its JSON), must equal VALUE. A body that is not JSON
never matches. Every given filter must hold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.core.jsontext import loads
from worker.core.parking import ParkedView, error_type_of

_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")
_MISSING = object()


class FilterError(ValueError):
    """A filter that cannot be understood (bad arguments: exit 2)."""


def parse_path(path: str) -> list[str | int]:
    text = path.strip()
    text = text[1:] if text.startswith("$") else text
    if text and not text.startswith((".", "[")):
        text = "." + text
    steps: list[str | int] = []
    position = 0
    while position < len(text):
        found = _STEP.match(text, position)
        if found is None:
            raise FilterError(f"--match: cannot read the path {path!r}")
        key, index, quoted, double = found.groups()
        steps.append(int(index) if index is not None else (key or quoted or double or ""))
        position = found.end()
    if not steps:
        raise FilterError(f"--match: empty path in {path!r}")
    return steps


def _has(value: Any, step: str | int) -> bool:
    if isinstance(step, int):
        return isinstance(value, list) and -len(value) <= step < len(value)
    return isinstance(value, dict) and step in value


def _lookup(value: Any, steps: Sequence[str | int]) -> Any:
    for step in steps:
        if not _has(value, step):
            return _MISSING
        value = value[step]
    return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise FilterError(f"not an ISO 8601 time: {text!r}") from exc
    if moment.tzinfo is None:
        raise FilterError(f"give a time zone (e.g. Z or +00:00): {text!r}")
    return moment


@dataclass(frozen=True)
class Filters:
    reasons: frozenset[str] = frozenset()
    errors: frozenset[str] = frozenset()
    ids: frozenset[str] = frozenset()
    error_types: frozenset[str] = frozenset()
    parked_before: datetime | None = None
    parked_after: datetime | None = None
    body_contains: str | None = None
    match: tuple[tuple[tuple[str | int, ...], str], ...] = ()
    limit: int | None = None

    @classmethod
    def build(
        cls,
        *,
        reasons: Sequence[str] = (),
        errors: Sequence[str] = (),
        ids: Sequence[str] = (),
        parked_before: str | None = None,
        parked_after: str | None = None,
        body_contains: str | None = None,
        match: Sequence[str] = (),
        limit: int | None = None,
        error_types: Sequence[str] = (),
    ) -> Filters:
        pairs = []
        for item in match:
            path, sep, value = item.partition("=")
            if not sep:
                raise FilterError(f"--match wants PATH=VALUE, got {item!r}")
            pairs.append((tuple(parse_path(path)), value))
        if limit is not None and limit < 1:
            raise FilterError("--limit must be at least 1")
        return cls(
            frozenset(reasons),
            frozenset(errors),
            frozenset(ids),
            frozenset(error_types),
            parse_time(parked_before) if parked_before else None,
            parse_time(parked_after) if parked_after else None,
            body_contains,
            tuple(pairs),
            limit,
        )

    @property
    def selects_all(self) -> bool:
        """No filter given (a limit alone still takes the first N): the plan says "all"."""
        return not (
            self.reasons
            or self.errors
            or self.ids
            or self.error_types
            or self.parked_before
            or self.parked_after
            or self.body_contains is not None
            or self.match
        )

    def matches(self, message_id: str, view: ParkedView) -> bool:
        meta = view.meta
        checks = (
            not self.reasons or meta.get("reason") in self.reasons,
            not self.errors or meta.get("error") in self.errors,
            not self.ids or message_id in self.ids,
            not self.error_types or error_type_of(meta) in self.error_types,
            self.body_contains is None or self.body_contains in view.body,
            self._in_time(meta.get("parked-at")),
        )
        return all(checks) and self._body_matches(view.body)

    def _in_time(self, parked_at: str | None) -> bool:
        if self.parked_before is None and self.parked_after is None:
            return True
        try:
            moment = datetime.fromisoformat(parked_at or "")
        except ValueError:
            return False
        if self.parked_before is not None and not moment < self.parked_before:
            return False
        return self.parked_after is None or moment > self.parked_after

    def _body_matches(self, body: str) -> bool:
        if not self.match:
            return True
        try:
            document = loads(body)
        except ValueError:
            return False
        for steps, expected in self.match:
            found = _lookup(document, steps)
            if found is _MISSING or _as_text(found) != expected:
                return False
        return True
