"""The parking format (SPEC.md, Parking): nothing of the original is dropped (pure).

1. the body byte for byte, the original attributes, plus five `retry-worker.*` attributes;
2. if that exceeds SQS's 10 attributes: one JSON attribute `retry-worker.meta`;
3. if not even that fits: a JSON envelope `{"retry_worker", "body", "attributes"}`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from worker.core.envelope import DlqMessage

MAX_ATTRIBUTES = 10
META_ATTRIBUTE = "retry-worker.meta"


@dataclass(frozen=True)
class ParkedMessage:
    body: str
    attributes: dict[str, dict[str, Any]]


def _string(value: str) -> dict[str, Any]:
    return {"DataType": "String", "StringValue": value}


def _plain_attributes(attributes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Attributes as JSON-safe values (binary as base64)."""
    out: dict[str, Any] = {}
    for name, attr in attributes.items():
        entry: dict[str, Any] = {"DataType": attr.get("DataType", "String")}
        if "StringValue" in attr:
            entry["StringValue"] = attr["StringValue"]
        if "BinaryValue" in attr:
            entry["BinaryValue"] = base64.b64encode(bytes(attr["BinaryValue"])).decode("ascii")
        out[name] = entry
    return out


def parking_metadata(
    *, reason: str, attempts: int, error: str, source_queue: str, parked_at: float
) -> dict[str, str]:
    return {
        "reason": reason,
        "attempts": str(attempts),
        "error": error or "none",
        "source-queue": source_queue,
        "parked-at": datetime.fromtimestamp(parked_at, UTC).isoformat(timespec="seconds"),
    }


def build_parked(message: DlqMessage, meta: dict[str, str]) -> ParkedMessage:
    original = message.attributes
    own = {f"retry-worker.{k}": _string(v) for k, v in meta.items()}
    # Our fresh metadata replaces stale metadata from an earlier parking (an operator redrive).
    kept = {k: v for k, v in original.items() if k not in own and k != META_ATTRIBUTE}
    if len(kept) + len(own) <= MAX_ATTRIBUTES:
        return ParkedMessage(message.body, {**kept, **own})
    if len(kept) + 1 <= MAX_ATTRIBUTES:
        return ParkedMessage(message.body, {**kept, META_ATTRIBUTE: _string(json.dumps(meta))})
    envelope = {
        "retry_worker": meta,
        "body": message.body,
        "attributes": _plain_attributes(original),
    }
    return ParkedMessage(json.dumps(envelope), {META_ATTRIBUTE: _string(json.dumps(meta))})
