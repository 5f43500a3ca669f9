"""Where a configuration's keys are, and which of them no setting has (pure).

`key_lines` reads the line of every key from a YAML file's node tree; `unknown_keys` walks one
file's tree against the settings models — each file on its own, so a typo under `defaults` is
reported once, where it was written, not once for every queue that inherits it.
"""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

KeyPath = tuple[str, ...]  # keys, and list positions as `[0]`


def key_lines(text: str) -> dict[KeyPath, int]:
    """The 1-based line of every key (and list item) of a YAML document."""
    lines: dict[KeyPath, int] = {}
    seen: set[int] = set()  # an anchor's node is walked once (aliases may nest, or loop)

    def walk(node: yaml.Node, path: KeyPath) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    lines[(*path, str(key.value))] = key.start_mark.line + 1
                    walk(value, (*path, str(key.value)))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*path, f"[{index}]")] = item.start_mark.line + 1
                walk(item, (*path, f"[{index}]"))

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return lines


def unknown_keys(data: Any, annotation: Any, path: KeyPath = ()) -> list[tuple[KeyPath, str]]:
    """Every key no setting has: its path and a suggestion (a known key it nearly is, or
    "")."""
    annotation = _chosen(annotation, data)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if not isinstance(data, dict):
            return []
        fields = {
            **annotation.model_fields,
            **{f.alias: f for f in annotation.model_fields.values() if f.alias},
        }
        # the settings' root takes its sections in any case (pydantic-settings)
        folded = annotation.model_config.get("case_sensitive") is False
        found = []
        for key, value in data.items():
            here = (*path, str(key))
            name = str(key).lower() if folded else key
            if name in fields:
                found += unknown_keys(value, fields[name].annotation, here)
            else:
                close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
                found.append((here, close[0] if close else ""))
        return found
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict and isinstance(data, dict) and len(args) == 2:
        return [f for k, v in data.items() for f in unknown_keys(v, args[1], (*path, str(k)))]
    if origin in (tuple, list) and isinstance(data, list) and args:
        return [f for i, v in enumerate(data) for f in unknown_keys(v, args[0], (*path, f"[{i}]"))]
    return []


def _chosen(annotation: Any, data: Any) -> Any:
    """The type a value is read as: Annotated unwrapped, and of a union the model the value's
    `kind` names (or the only model, or a mapping type, for a mapping)."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) not in (Union, types.UnionType):
        return annotation
    members = [_chosen(m, data) for m in get_args(annotation) if m is not type(None)]
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    if isinstance(data, dict) and len(models) > 1:
        kind = data.get("kind")
        for model in models:
            field = model.model_fields.get("kind")
            literal = field is not None and get_origin(field.annotation) is Literal
            if literal and kind in get_args(field.annotation):  # type: ignore[union-attr]
                return model
        return Any  # no kind, or an unknown one: the validation says which kinds there are
    if models:
        return models[0]
    return members[0] if len(members) == 1 else Any
