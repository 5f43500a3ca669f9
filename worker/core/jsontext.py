"""JSON text from outside — a message body, a hook's answer — parsed or refused, never a
crash (pure).

Python's parser raises `RecursionError`, not `ValueError`, for a document nested deeper than
the interpreter's stack allows (`"[" * 5000`). To every caller that is "not JSON", like any
other bad text: one absurd message must not fail the batch it came in.
"""

from __future__ import annotations

import json
from typing import Any


def loads(text: str | bytes) -> Any:
    """`json.loads`, with a document nested too deeply refused as a `ValueError`."""
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
