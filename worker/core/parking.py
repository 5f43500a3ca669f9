"""The parking format (SPEC.md, Parking): nothing of the original is dropped (pure).

1. the body byte for byte, the original attributes, plus five `retry-worker.*` attributes;
2. if that exceeds SQS's 10 attributes, or the parking queue's size limit: one JSON attribute
   `retry-worker.meta` instead of the five;
3. if not even that fits the attribute count: a JSON envelope
   `{"retry_worker", "body", "attributes"}`.
A form over the parking queue's size limit is never sent: `build_parked` returns None and the
message stays in its DLQ, unchanged (unparkable). `read_parked` reads any of the three forms
back: the metadata, and the original body and attributes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from worker.core.envelope import OWN_PREFIX, SOURCE_ATTRIBUTE, DlqMessage
from worker.core.errors import clean, said_type
from worker.core.jsontext import loads
from worker.core.limits import SQS_MAX_MESSAGE_BYTES, message_size

MAX_ATTRIBUTES = 10
META_ATTRIBUTE = "retry-worker.meta"
# Bytes of UTF-8 kept of a failure's type and of its message.
MAX_ERROR_BYTES = 1024
# What a form over the size limit does without, in this order: the failure's message, the
# convenience of `source-arn`, the failure's type. The rest is never dropped.
OPTIONAL_META = ("error-message", "source-arn", "error-type")
# The group of a message sent to a FIFO parking queue (or back to a FIFO DLQ) that had none.
DEFAULT_GROUP_ID = "retry-worker"


@dataclass(frozen=True)
class ParkedMessage:
    body: str
    attributes: dict[str, dict[str, Any]]


def _string(value: str) -> dict[str, Any]:
    return {"DataType": "String", "StringValue": value}


def plain_attributes(attributes: dict[str, dict[str, Any]]) -> dict[str, Any]:
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
    *,
    reason: str,
    attempts: int,
    error: str | None,
    source_queue: str,
    parked_at: float,
    group_id: str | None = None,
    source_arn: str | None = None,
    message_id: str | None = None,
    error_type: str | None = None,
    error_message: str | None = None,
) -> dict[str, str]:
    """The five keys of SPEC.md, `group-id` for a FIFO message (a replay keeps its group even
    when the parking queue is a standard queue), `source-arn` for a message an SQS queue
    dead-lettered (a replay goes back to it, also from a DLQ with several sources) and
    `message-id`, the DLQ message's id: a replay to the target gives the target the key every
    attempt had (SPEC.md, Idempotency), not the parked copy's new id; `error-type` and
    `error-message`, what the target said of the last failure (SPEC.md, Error detail), each at
    most 1 KiB."""
    meta = {
        "reason": reason,
        "attempts": str(attempts),
        "error": said_type(error) or "none",
        "source-queue": source_queue,
        "parked-at": iso_time(parked_at),
    }
    if group_id:
        meta["group-id"] = group_id
    if source_arn:
        meta["source-arn"] = source_arn
    if message_id:
        meta["message-id"] = message_id
    if error_type:
        meta["error-type"] = clipped(error_type)
    if error_message:
        meta["error-message"] = clipped(error_message)
    return meta


def iso_time(epoch: float) -> str:
    """A time as the parking metadata writes it (and the keeper's note, a digest's window):
    ISO 8601, seconds, UTC."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def clipped(text: str, limit: int = MAX_ERROR_BYTES) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, never inside a character, "…" marking
    the cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - len("…".encode())].decode("utf-8", "ignore") + "…"


def _forms(message: DlqMessage, meta: dict[str, str]) -> list[ParkedMessage]:
    """The parking forms that fit the attribute count, most readable first."""
    own = {f"retry-worker.{k}": _string(v) for k, v in meta.items()}
    # Not ASCII-escaped: what a target said in another script would take twice the bytes.
    packed = {META_ATTRIBUTE: _string(json.dumps(meta, ensure_ascii=False))}
    # Our fresh metadata replaces stale metadata from an earlier parking (an operator redrive),
    # and the attempt marker stays behind: a replay starts with fresh attempts.
    kept = message.foreign_attributes()
    forms = []
    if len(kept) + len(own) <= MAX_ATTRIBUTES:
        forms.append(ParkedMessage(message.body, {**kept, **own}))
    if len(kept) + 1 <= MAX_ATTRIBUTES:
        forms.append(ParkedMessage(message.body, {**kept, **packed}))
    if not forms:
        envelope = {
            "retry_worker": meta,
            "body": message.body,
            "attributes": plain_attributes(kept),
        }
        # Not ASCII-escaped either: "é" would take 6 bytes, not 2, and a body well within its
        # DLQ's size would not fit the parking queue in its envelope (unparkable, held).
        forms.append(ParkedMessage(json.dumps(envelope, ensure_ascii=False), packed))
    return forms


def build_parked(
    message: DlqMessage, meta: dict[str, str], max_bytes: int = SQS_MAX_MESSAGE_BYTES
) -> ParkedMessage | None:
    """The first parking form within `max_bytes` (the parking queue's MaximumMessageSize),
    or None when none fits. The failure's message and type and `source-arn` are conveniences:
    a message they would keep out of the parking queue is parked without them
    (OPTIONAL_META, dropped one by one)."""
    candidates = [meta]
    for key in OPTIONAL_META:
        if key in candidates[-1]:
            candidates.append({k: v for k, v in candidates[-1].items() if k != key})
    for candidate in candidates:
        for form in _forms(message, candidate):
            if message_size(form.body, form.attributes) <= max_bytes:
                return form
    return None


def source_marked(
    attributes: dict[str, dict[str, Any]], body: str, source_arn: str | None, max_bytes: int
) -> dict[str, dict[str, Any]]:
    """`attributes` with `retry-worker.source-arn` for a copy sent back to its DLQ, when it
    has room (10 attributes, `max_bytes`): SQS sets `DeadLetterQueueSourceArn` only when it
    dead-letters a message itself. Without room, as they were (the DLQ's single redrive
    source, if it has one, is used then)."""
    if not source_arn or len(attributes) >= MAX_ATTRIBUTES:
        return attributes
    marked = {**attributes, SOURCE_ATTRIBUTE: _string(source_arn)}
    return marked if message_size(body, marked) <= max_bytes else attributes


@dataclass(frozen=True)
class ParkedView:
    """A parked message read back: our metadata, and the original as it was."""

    meta: dict[str, str]
    body: str
    attributes: dict[str, dict[str, Any]]  # the original's, without any `retry-worker.*`

    @property
    def source_queue(self) -> str:
        return self.meta.get("source-queue", "")


def from_plain(attributes: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, attr in attributes.items():
        entry: dict[str, Any] = {"DataType": attr.get("DataType", "String")}
        if "StringValue" in attr:
            entry["StringValue"] = attr["StringValue"]
        if "BinaryValue" in attr:
            entry["BinaryValue"] = base64.b64decode(attr["BinaryValue"])
        out[name] = entry
    return out


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_parked(body: str, attributes: Mapping[str, Mapping[str, Any]]) -> ParkedView | None:
    """Whichever of the three forms carries the metadata; None for a message that was not
    parked by us."""
    foreign = {k: dict(v) for k, v in attributes.items() if not k.startswith(OWN_PREFIX)}
    packed = attributes.get(META_ATTRIBUTE, {}).get("StringValue")
    if packed is not None:
        raw = _json_object(packed)
        if raw is None:
            return None
        # Ours, so never half a surrogate pair (JSON can escape one; SQS would refuse it when
        # the keeper sends the metadata on, and UTF-8 cannot encode it)
        meta = {k: clean(str(v)) for k, v in raw.items()}
        envelope = _json_object(body) if body.startswith('{"retry_worker"') else None
        if envelope is not None and {"body", "attributes"} <= envelope.keys():
            # Without ours (envelopes written before 0.1.1 kept the attempt marker).
            inner = from_plain(envelope["attributes"])
            inner = {k: v for k, v in inner.items() if not k.startswith(OWN_PREFIX)}
            return ParkedView(meta, str(envelope["body"]), inner)
        return ParkedView(meta, body, foreign)
    own = {
        name[len(OWN_PREFIX) :]: str(attr.get("StringValue", ""))
        for name, attr in attributes.items()
        if name.startswith(OWN_PREFIX)
    }
    if "reason" not in own:
        return None
    own.pop("attempt", None)  # the attempt marker is not parking metadata
    return ParkedView(own, body, foreign)


def error_type_of(meta: Mapping[str, str]) -> str:
    """The last failure's type, or `none` when the message was parked without one (a rule, a
    hook, a limit reached on receive; or parked before error types were kept)."""
    return meta.get("error-type") or "none"


def parked_at(meta: Mapping[str, str]) -> float | None:
    """`parked-at` as epoch seconds; None when missing or not a time."""
    try:
        return datetime.fromisoformat(meta.get("parked-at", "")).timestamp()
    except ValueError:
        return None


def kept_copy(
    message_id: str, body: str, attributes: Mapping[str, Mapping[str, Any]], max_bytes: int
) -> ParkedMessage:
    """What the keeper sends to re-park a message (SPEC.md, Keeping parked messages): the same
    original and metadata, `parked-at` unchanged, `kept` one more and `kept-from` the id of the
    copy it replaces (a copy left twice by a crash is known by it). A message we did not park,
    or one whose metadata would no longer fit, goes as it was: kept all the same."""
    as_it_was = ParkedMessage(body, {k: dict(v) for k, v in attributes.items()})
    view = read_parked(body, attributes)
    if view is None:
        return as_it_was
    try:
        kept = int(view.meta.get("kept", "0")) + 1
    except ValueError:
        kept = 1
    meta = {**view.meta, "kept": str(kept), "kept-from": message_id}
    original = DlqMessage("", "", view.body, attributes=view.attributes)
    return build_parked(original, meta, max_bytes) or as_it_was
