"""A parked message as read from its queue, and the JSONL format of backups and exports.

One JSON object per line: `message_id`, `group_id`, `body` and `attributes` exactly as the
message sat in the queue (binary values base64; `restore` sends them back as they were),
`meta` (the parking metadata, or null), `queue` (where it was read) and, when the message had
one, `trace_header` (its AWSTraceHeader, sent with it again); for the console's edit, `sent_as`
(the body sent instead: `restore` puts back the original). A backup is written
and flushed to disk before anything it holds is deleted or moved, and never overwrites a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from worker.aws.sqs import copy_attributes
from worker.core.envelope import DlqMessage
from worker.core.parking import ParkedView, from_plain, plain_attributes, read_parked


@dataclass(frozen=True)
class Record:
    message_id: str
    receipt_handle: str
    body: str  # as it sits in the queue (a parked form)
    attributes: dict[str, dict[str, Any]]
    group_id: str | None
    view: ParkedView | None  # None: not a message we parked
    trace_header: str | None = None  # AWSTraceHeader: a replay keeps the trace
    # the console's edit: the body sent instead (kept in the backup beside the original)
    sent_as: str | None = None

    @classmethod
    def received(cls, raw: dict[str, Any]) -> Record:
        body = raw.get("Body", "")
        attributes = copy_attributes(raw.get("MessageAttributes", {}))
        return cls(
            raw["MessageId"],
            raw["ReceiptHandle"],
            body,
            attributes,
            raw.get("Attributes", {}).get("MessageGroupId"),
            read_parked(body, attributes),
            raw.get("Attributes", {}).get("AWSTraceHeader"),
        )

    @property
    def size(self) -> int:
        return len(self.body.encode("utf-8"))

    @property
    def dlq_message_id(self) -> str:
        """The id the message had in its DLQ (every attempt's default idempotency key); a
        message parked before that was kept: the parked copy's own."""
        return (self.view.meta.get("message-id") if self.view else None) or self.message_id

    def original(self, sent_at: float | None = None) -> DlqMessage:
        """The message as it was before it was parked (our metadata left out), as a replay
        sends it or a decision sees it."""
        assert self.view is not None
        return DlqMessage(
            self.message_id,
            self.receipt_handle,
            self.view.body,
            attributes=self.view.attributes,
            sent_at=sent_at,
            group_id=self.group_id or self.view.meta.get("group-id"),
            carried_source=self.view.meta.get("source-arn"),
            trace_header=self.trace_header,
        )

    def line(self, queue_url: str) -> str:
        return json.dumps(
            {
                "message_id": self.message_id,
                "group_id": self.group_id,
                "body": self.body,
                "attributes": plain_attributes(self.attributes),
                "meta": self.view.meta if self.view else None,
                "queue": queue_url,
                **({"trace_header": self.trace_header} if self.trace_header else {}),
                **({"sent_as": self.sent_as} if self.sent_as is not None else {}),
            },
            ensure_ascii=False,
        )


@dataclass(frozen=True)
class Saved:
    """One line of a backup or export file, ready to send again."""

    message_id: str
    group_id: str | None
    body: str
    attributes: dict[str, dict[str, Any]]
    trace_header: str | None = None


def default_backup_path(
    queue: str, now: datetime | None = None, *, kind: str = "backup", suffix: str = ""
) -> Path:
    """`retry-worker-<kind>-<queue>-<UTC time><suffix>.jsonl` (kind: backup, export)."""
    moment = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return Path(f"retry-worker-{kind}-{queue}-{moment}{suffix}.jsonl")


class JsonlWriter:
    """Exclusive create (never overwrites); each `write` is on disk when it returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0
        self._file: IO[str] = path.open("x", encoding="utf-8")
        _sync_directory(path)  # the new file's name survives a crash, not only its data

    def write(self, records: Sequence[Record], queue_url: str) -> None:
        for record in records:
            self._file.write(record.line(queue_url) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.written += len(records)

    def close(self) -> None:
        self._file.close()


def _sync_directory(path: Path) -> None:
    folder = os.open(path.resolve().parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def saved_from(item: dict[str, Any]) -> Saved:
    """One parsed backup line (raises KeyError or TypeError for what is not one)."""
    return Saved(
        str(item["message_id"]),
        item.get("group_id"),
        str(item["body"]),
        from_plain(item.get("attributes") or {}),
        str(item["trace_header"]) if item.get("trace_header") else None,
    )


def read_saved(path: Path) -> Iterator[Saved]:
    """The messages of a backup or export file, one at a time (bounded memory)."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield saved_from(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a retry-worker backup line") from exc
