"""Where backups and exports live: a local file, or S3 (`s3://bucket/key`: a laptop's disk or a
console pod's `emptyDir` dies with it; a bucket does not). Both hold the same JSONL lines
(`records.py`).

In S3 a backup is a series of objects `<key>.part-000001`, `<key>.part-000002`, …: every
write before a move is one object, on S3 when the write returns (S3 has no append), so the
rule holds as it does on disk — a chunk is in its backup before it moves. An export (nothing
moves) writes a part per `EXPORT_PART_LINES` or `EXPORT_PART_BYTES`, whichever comes first.
`restore s3://bucket/key` reads the parts in order, or the object `<key>` itself (a file
someone uploaded). Neither is ever overwritten: an existing key or part refuses the command
before anything moves, and every part is written only if it does not exist (`IfNoneMatch`: a
second command writing the same key fails instead of replacing it), as a missing bucket or a
refused write fails (the first write comes before the first move)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from worker.aws.clients import Clients
from worker.aws.errors import error_code
from worker.ops.records import JsonlWriter, Record, Saved, read_saved, saved_from

EXPORT_PART_LINES = 5000
EXPORT_PART_BYTES = 8 * 1024 * 1024  # or this much: an export's memory stays bounded
MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


class BackupError(ValueError):
    """A backup or export that cannot be written or read: said with its location."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def parts(self) -> str:
        """The prefix of its parts' keys."""
        return f"{self.key}.part-"

    def part(self, number: int) -> str:
        return f"{self.parts}{number:06d}"

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


Location = Path | S3Location


def location(text: str) -> Location:
    """`s3://bucket/key` or a local path."""
    if not text.startswith("s3://"):
        return Path(text)
    bucket, _, key = text.removeprefix("s3://").partition("/")
    if not bucket or not key or key.endswith("/"):
        raise BackupError(f"{text}: an S3 location is s3://bucket/key")
    return S3Location(bucket, key)


def folder(text: str) -> Location:
    """A directory, or an S3 prefix: `s3://bucket`, `s3://bucket/prefix` or `…/prefix/`."""
    if not text.startswith("s3://"):
        return Path(text)
    bucket, _, prefix = text.removeprefix("s3://").partition("/")
    if not bucket:
        raise BackupError(f"{text}: an S3 prefix is s3://bucket/prefix")
    return S3Location(bucket, prefix.strip("/"))


def inside(where: Location, name: str) -> Location:
    """`name` in a folder: a directory, or an S3 prefix."""
    if isinstance(where, S3Location):
        return S3Location(where.bucket, f"{where.key}/{name}" if where.key else name)
    return where / name


class Writer(Protocol):
    written: int

    async def write(self, records: Sequence[Record], queue_url: str) -> None: ...

    async def close(self) -> None: ...


async def exists(where: Location, clients: Clients) -> bool:
    if isinstance(where, Path):
        return where.exists()
    s3 = await clients.get("s3")
    try:
        listed = await s3.list_objects_v2(Bucket=where.bucket, Prefix=where.parts, MaxKeys=1)
        if listed.get("KeyCount", 0):
            return True
        await s3.head_object(Bucket=where.bucket, Key=where.key)
    except Exception as exc:
        if error_code(exc) in MISSING:
            return False
        raise BackupError(f"{where}: {error_code(exc)}") from exc
    return True


class LocalWriter:
    def __init__(self, path: Path) -> None:
        self._file = JsonlWriter(path)
        self.written = 0

    async def write(self, records: Sequence[Record], queue_url: str) -> None:
        self._file.write(records, queue_url)
        self.written = self._file.written

    async def close(self) -> None:
        self._file.close()


class S3Writer:
    def __init__(self, where: S3Location, clients: Clients, *, part_lines: int = 0) -> None:
        self._where = where
        self._clients = clients
        self._part_lines = part_lines  # 0: every write is a part of its own
        self._lines: list[str] = []
        self._bytes = 0
        self._parts = 0
        self.written = 0

    async def write(self, records: Sequence[Record], queue_url: str) -> None:
        lines = [r.line(queue_url) for r in records]
        self._lines += lines
        self._bytes += sum(len(line) for line in lines)
        self.written += len(records)
        if len(self._lines) >= self._part_lines or self._bytes >= EXPORT_PART_BYTES:
            await self._flush()

    async def close(self) -> None:
        await self._flush()

    async def _flush(self) -> None:
        """The lines written so far as the next part. Its lines and number are taken before
        the first await: chunks backed up at once never share a part (or its key)."""
        if not self._lines:
            return
        lines, self._lines, self._bytes = self._lines, [], 0
        self._parts += 1
        key = self._where.part(self._parts)
        body = ("\n".join(lines) + "\n").encode("utf-8")
        s3 = await self._clients.get("s3")
        try:
            await s3.put_object(  # never over another's part: a second writer fails here
                Bucket=self._where.bucket,
                Key=key,
                Body=body,
                ContentType="application/jsonl",
                IfNoneMatch="*",
            )
        except Exception as exc:
            raise BackupError(f"{self._where}: {error_code(exc)}") from exc


def open_writer(where: Location, clients: Clients | None, *, export: bool = False) -> Writer:
    """A backup's writer (each write stored before it returns) or an export's (parts of
    `EXPORT_PART_LINES` lines in S3)."""
    if isinstance(where, Path):
        return LocalWriter(where)
    if clients is None:
        raise BackupError(f"{where}: no AWS clients to write it with")
    return S3Writer(where, clients, part_lines=EXPORT_PART_LINES if export else 0)


async def read_all(where: Location, clients: Clients | None) -> AsyncIterator[Saved]:
    """The messages of a backup or export, in order, one part in memory at a time."""
    if isinstance(where, Path):
        for saved in read_saved(where):
            yield saved
        return
    if clients is None:
        raise BackupError(f"{where}: no AWS clients to read it with")
    async for line, place in s3_lines(where, clients):
        yield _saved(line, place)


async def s3_lines(where: S3Location, clients: Clients) -> AsyncIterator[tuple[str, str]]:
    """Each line of a backup or export in S3 and where it is (`bucket/key:line`), in order,
    one part in memory at a time (the console's download streams them)."""
    s3 = await clients.get("s3")
    try:
        keys = await _part_keys(s3, where) or [where.key]
        for key in keys:
            response = await s3.get_object(Bucket=where.bucket, Key=key)
            async with response["Body"] as stream:
                text = (await stream.read()).decode("utf-8")
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    yield line, f"{where.bucket}/{key}:{number}"
    except BackupError:
        raise
    except Exception as exc:
        raise BackupError(f"{where}: {error_code(exc)}") from exc


async def _part_keys(s3: Any, where: S3Location) -> list[str]:
    prefix = where.parts
    keys: list[str] = []
    token: dict[str, str] = {}
    while True:
        listed = await s3.list_objects_v2(Bucket=where.bucket, Prefix=prefix, **token)
        keys += [item["Key"] for item in listed.get("Contents", [])]
        if not listed.get("IsTruncated"):
            return sorted(keys)
        token = {"ContinuationToken": listed["NextContinuationToken"]}


def _saved(line: str, where: str) -> Saved:
    try:
        return saved_from(json.loads(line))
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{where}: not a retry-worker backup line") from exc
