"""Where each configuration error was written (pure): the file and line that set the key, an
environment variable, or `defaults` for what a queue inherited — each error once.

A file's keys and lines come from `keys.key_lines`; the layers are the files in the order
they merge (later wins). List items are `[0]` in a key path: a queue named `2024` stays
`queues.2024`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from worker.settings import TARGET_KINDS, QueueSettings, Settings
from worker.settings.keys import KeyPath, unknown_keys

ENV_PREFIX = "RETRY_WORKER_"


class Layer:
    """One configuration file as read: its data and where each key is."""

    def __init__(self, path: Path, data: dict[str, Any], lines: dict[KeyPath, int]) -> None:
        self.path, self.data, self.lines = path, data, lines

    def unknown_keys(self) -> list[tuple[KeyPath, str]]:
        """Each key no model knows, with the closest known one (or ""): the settings, and
        `discovery.defaults`, a free mapping read as a queue's settings at run time."""
        found = unknown_keys(self.data, Settings)
        discovery = self.data.get("discovery")
        if isinstance(discovery, dict) and isinstance(discovery.get("defaults"), dict):
            found += unknown_keys(discovery["defaults"], QueueSettings, ("discovery", "defaults"))
        return found

    def unknown(self) -> list[str]:
        """`file:line: path: unknown key `k` (did you mean `key`?)`, once per place."""
        out = []
        for where, close in self.unknown_keys():
            hint = f" (did you mean `{close}`?)" if close else ""
            out.append(f"{self.place(where)}{dotted(where)}: unknown key `{where[-1]}`{hint}")
        return out

    def depth(self, where: KeyPath) -> int:
        """How much of `where` this file sets: the length of its longest prefix here."""
        return next((end for end in range(len(where), 0, -1) if where[:end] in self.lines), 0)

    def place(self, where: KeyPath) -> str:
        """`file:line: ` of the key, or of its nearest parent in this file."""
        end = self.depth(where)
        return f"{self.path}:{self.lines[where[:end]]}: " if end else f"{self.path}: "


class Variable(Layer):
    """An environment variable as a layer: it sets its own path (and so its parents), and
    is the last word on it. `RETRY_WORKER_HTTP__PORT` sets `http.port`."""

    def __init__(self, name: str) -> None:
        parts = tuple(name.removeprefix(ENV_PREFIX).lower().split("__"))
        lines = {parts[:end]: 0 for end in range(1, len(parts) + 1)}
        data: dict[str, Any] = {parts[-1]: ""}  # the path it sets (its value is not read)
        for part in reversed(parts[:-1]):
            data = {part: data}
        super().__init__(Path(name), data, lines)
        self.name = name

    def place(self, where: KeyPath) -> str:
        return f"{self.name}: "


def dotted(where: Sequence[str]) -> str:
    """A key path as the YAML reads: `queues.orders.rules[0].when`."""
    text = ""
    for part in where:
        text += part if part.startswith("[") or not text else f".{part}"
    return text or "<root>"


def parsed(text: str) -> KeyPath:
    """`queues.orders.rules[0].when` back into its parts."""
    parts: list[str] = []
    for piece in text.split("."):
        name, _, indexes = piece.partition("[")
        parts.append(name)
        parts += [f"[{i}" for i in indexes.split("[") if i] if indexes else []
    return tuple(p for p in parts if p)


class Places:
    def __init__(self, layers: Sequence[Layer], environ: Mapping[str, str]) -> None:
        # the files, then the environment's variables: later wins, as they merge
        sections = {name.upper() for name in Settings.model_fields}
        variables = [
            Variable(var)
            for var in environ
            if var.startswith(ENV_PREFIX)
            and var.removeprefix(ENV_PREFIX).split("__", 1)[0] in sections
        ]
        self._layers = [*layers, *variables]

    def unknown(self) -> tuple[list[str], set[KeyPath]]:
        """Every unknown key of the files and the variables, each once at its place, and
        their paths (pydantic's own "extra" errors for them are not said again)."""
        lines = [line for layer in self._layers for line in layer.unknown()]
        return lines, {w for layer in self._layers for w, _ in layer.unknown_keys()}

    def said(self, where: KeyPath, message: str) -> str:
        """`place path: message`, the path as the queue inherited it when it did, the place
        the last layer among those that set the most of it: the one whose value stands."""
        where = self.inherited(where)
        most = max((x.depth(where) for x in self._layers), default=0)
        setting = [x for x in self._layers if most and x.depth(where) == most]
        # a list replaces, it does not merge: what stands is the last layer's that set it
        listed = next((where[:i] for i, part in enumerate(where) if part.startswith("[")), None)
        if listed is not None:
            setting = [x for x in self._layers if x.depth(listed) == len(listed)] or setting
        place = setting[-1].place(where) if setting else ""
        return f"{place}{dotted(where)}: {message}"

    def inherited(self, where: KeyPath) -> KeyPath:
        """`queues.<q>.<rest>` as `defaults.<rest>` when `defaults` set more of it than the
        queue did. A list the queue sets is its own: lists replace, they do not merge."""
        if len(where) < 3 or where[0] != "queues":
            return where
        own, rest = where[:2], where[2:]
        for index, part in enumerate(rest):
            listed = (*own, *rest[:index])
            if part.startswith("[") and any(x.depth(listed) == len(listed) for x in self._layers):
                return where
        queue = max((x.depth(where) for x in self._layers), default=0) - 2
        defaults = max((x.depth(("defaults", *rest)) for x in self._layers), default=0) - 1
        return ("defaults", *rest) if defaults > max(queue, 0) else where

    def pydantic(self, exc: ValidationError, reported: set[KeyPath]) -> list[str]:
        """Each error once, at its place. Unknown keys the files' walk `reported` already
        are not said twice."""
        out: list[str] = []
        for err in exc.errors():
            loc: list[str] = []
            for part in err["loc"]:
                # Drop pydantic's union-branch names (`target.lambda.function` reads as the
                # YAML does: `target.function`).
                if loc and loc[-1] == "target" and part in TARGET_KINDS:
                    continue
                loc.append(f"[{part}]" if isinstance(part, int) else str(part))
            where = tuple(loc)
            if err["type"] == "extra_forbidden" and self.inherited(where) in reported:
                continue
            line = self.said(where, err["msg"].removeprefix("Value error, "))
            if line not in out:
                out.append(line)
        return out

    def cross_field(self, errors: Sequence[str]) -> list[str]:
        """`path: message` errors of the rules across keys, placed as the others."""
        out = []
        for error in errors:
            path, sep, message = error.partition(": ")
            line = self.said(parsed(path), message) if sep and " " not in path else error
            if line not in out:
                out.append(line)
        return out
