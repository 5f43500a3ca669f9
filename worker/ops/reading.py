"""The read-only operator commands: status, parked summary / list / export, and the selection
of a queue's parked messages that every `parked` command shares."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import datetime
from typing import Any, TextIO

import anyio

from worker.aws.attributes import KeptTag, read_depth, read_kept, read_pause
from worker.aws.clients import Clients
from worker.aws.sqs import SqsQueue
from worker.ops.context import (
    QueueContext,
    existing,
    home_account,
    parking_place,
    same_queue,
    unreachable,
)
from worker.ops.filters import Filters
from worker.ops.records import Record
from worker.ops.scan import QueueReader
from worker.ops.store import Location, open_writer
from worker.settings import QueueSettings, Settings


def chosen_by(record: Record, ctx: QueueContext, filters: Filters) -> bool:
    """Parked by us from this queue's DLQ (a parking queue may serve several DLQs), and
    matching the filters."""
    view = record.view
    if view is None or not same_queue(view.source_queue, ctx.dlq.url):
        return False
    return filters.matches(record.message_id, view)


class Selection:
    """What an action takes of what a read brings: this queue's parked messages that match,
    up to `--limit`; everything else is kept (released at the end). Synchronous, so tasks
    taking batches at once never choose past the limit.

    With a `cutoff` (ISO seconds: when the command started), only what was parked by then:
    a message replayed to the DLQ that the daemon parks again meanwhile is not replayed twice
    in one run, and an action touches no more than its plan could have seen (`later`: how
    many matched but were parked after)."""

    def __init__(
        self, reader: QueueReader, ctx: QueueContext, filters: Filters, cutoff: str | None = None
    ) -> None:
        self._reader = reader
        self._ctx = ctx
        self._filters = filters
        self._cutoff = cutoff
        self.taken = 0
        self.later = 0

    @property
    def full(self) -> bool:
        return self._filters.limit is not None and self.taken >= self._filters.limit

    def choose(self, batch: list[Record]) -> list[Record]:
        chosen = []
        for record in batch:
            if self.full or not chosen_by(record, self._ctx, self._filters):
                self._reader.keep(record)
            elif self._parked_later(record):
                self.later += 1
                self._reader.keep(record)
            else:
                chosen.append(record)
                self.taken += 1
        if self.full:
            self._reader.finish(enough=True)  # no more receives
        return chosen

    def _parked_later(self, record: Record) -> bool:
        if self._cutoff is None or record.view is None:
            return False
        return record.view.meta.get("parked-at", "") > self._cutoff


async def selected(
    reader: QueueReader, ctx: QueueContext, filters: Filters
) -> AsyncIterator[list[Record]]:
    """Batches of this queue's parked messages that match (`Selection`), one task reading."""
    selection = Selection(reader, ctx, filters)
    async with aclosing(reader.batches()) as batches:
        async for batch in batches:
            if chosen := selection.choose(batch):
                yield chosen


async def export(
    reader: QueueReader,
    ctx: QueueContext,
    filters: Filters,
    where: Location,
    clients: Clients | None = None,
) -> int:
    """Every matching message to a file or S3 (`clients`); all of them stay parked."""
    writer = open_writer(where, clients, export=True)
    try:
        async for batch in selected(reader, ctx, filters):
            for record in batch:
                reader.keep(record)
            await writer.write(batch, ctx.parking.url)
    finally:
        await writer.close()
    return writer.written


class ParkingReads:
    """A parking queue's count and the keeper's note, read once per page or command however
    many configured queues share it."""

    def __init__(self) -> None:
        self._read: dict[str, tuple[int, KeptTag]] = {}
        self._locks: dict[str, anyio.Lock] = defaultdict(anyio.Lock)

    async def get(self, parking: SqsQueue) -> tuple[int, KeptTag]:
        async with self._locks[parking.url]:
            if parking.url not in self._read:
                count = sum((await read_depth(parking)).values())
                try:  # the note is a convenience: a role without ListQueueTags sees the rest
                    kept = await read_kept(parking.client, parking.url)
                except Exception:  # noqa: BLE001 - shown as "?" (not kept yet, or cannot say)
                    kept = KeptTag(None, None)
                self._read[parking.url] = (count, kept)
            return self._read[parking.url]


async def status_row(
    name: str,
    queue: QueueSettings,
    dlq: SqsQueue,
    parking: SqsQueue,
    shared: ParkingReads | None = None,
) -> dict[str, Any]:
    """One configured queue, from queue attributes and tags only (no receives)."""
    pause = await read_pause(dlq.client, dlq.url)
    parked, kept = await (shared or ParkingReads()).get(parking)
    return {
        "queue": name,
        "dlq": await read_depth(dlq),
        "dlq_url": dlq.url,
        "parking_queue": parking.url,
        "parked": parked,
        # the keeper's note (its last complete pass): None until a keeper has kept the queue
        "oldest_parked_at": kept.oldest_parked_at,
        "kept_at": kept.kept_at,
        "target": queue.target_key,
        "paused": pause.paused,
        "pause_note": pause.note,
    }


async def status(settings: Settings, clients: Clients) -> list[dict[str, Any]]:
    """A row a queue, read where it lives (its account and region); a queue that cannot be
    read gets a row saying why (`error`) — its account's role cannot be assumed, say — and
    the others are read all the same."""
    rows, shared = [], ParkingReads()
    parking_urls: dict[tuple[str | None, str, str], str] = {}  # shared: checked once
    for name, queue in settings.queues.items():
        place = clients.of(queue)
        where = {"account": place.account, "region": place.region}
        try:
            sqs = await place.get("sqs")
            dlq = SqsQueue(sqs, await existing(sqs, queue.queue_ref, "its DLQ"))
            ref = queue.policy.parking_queue or ""
            if (place.account, place.region, ref) not in parking_urls:
                url = await existing(sqs, ref, "its parking queue")
                parking_urls[place.account, place.region, ref] = url
            parking = SqsQueue(sqs, parking_urls[place.account, place.region, ref])
            rows.append({**await status_row(name, queue, dlq, parking, shared), **where})
        except Exception as exc:  # noqa: BLE001 - said on its row
            why = unreachable(exc)
            rows.append({"queue": name, "target": queue.target_key, "error": why, **where})
    # several queues' parking queue: its count is theirs together (`shared_parking`)
    home = home_account(settings, rows)
    places = {n: parking_place(settings, q, home) for n, q in settings.queues.items()}
    sharing = Counter(places.values())
    for row in rows:
        row["shared_parking"] = sharing[places[row["queue"]]] > 1
    return rows


def print_status(rows: list[dict[str, Any]], out: TextIO, now: float | None = None) -> None:
    """One line a queue; `oldest`: the oldest parked message's age as the keeper last saw it
    (`-`: nothing parked then, `?`: no keeper has kept the parking queue yet)."""
    now = time.time() if now is None else now
    # where each queue lives, when they do not all live in one place (`accounts:`)
    places = len({(r.get("account"), r.get("region")) for r in rows}) > 1
    head = f"{'queue':<20} {'visible':>8} {'in_flight':>9} {'delayed':>8} {'parked':>7}"
    out.write(
        head + f" {'oldest':>7} paused target" + ("  account/region" if places else "") + "\n"
    )
    # a parking queue several DLQs share: its whole count on each of their rows, marked
    sharing = Counter(row["parking_queue"] for row in rows if "error" not in row)
    marked = False
    for row in rows:
        where = f"  {row.get('account') or 'own'}/{row.get('region')}" if places else ""
        if "error" in row:
            out.write(f"{row['queue']:<20} {'cannot read: ' + row['error']}{where}\n")
            continue
        dlq = row["dlq"]
        mark = row.get("shared_parking") or sharing[row["parking_queue"]] > 1
        marked = marked or mark
        parked = f"{row['parked']}{'*' if mark else ''}"
        out.write(
            f"{row['queue']:<20} {dlq['visible']:>8} {dlq['in_flight']:>9} {dlq['delayed']:>8} "
            f"{parked:>7} {oldest_text(row, now):>7} {'yes' if row['paused'] else 'no':<6} "
            f"{row['target']}{where}\n"
        )
    if marked:  # the footnote of a mark above it
        out.write(
            "* the whole count of a parking queue these queues share; `parked summary QUEUE` "
            "counts a queue's own\n"
        )


def oldest_text(row: dict[str, Any], now: float) -> str:
    """A status row's oldest parked age, as the keeper last noted it."""
    if row.get("kept_at") is None:
        return "?"
    if not row.get("oldest_parked_at") or not row["parked"]:
        return "-"
    try:
        age = now - datetime.fromisoformat(row["oldest_parked_at"]).timestamp()
    except ValueError:
        return "?"
    return age_text(age)


def number(text: str | None) -> int:
    """A count in metadata (`kept`), 0 when missing or not a number."""
    try:
        return int(text or 0)
    except ValueError:
        return 0


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 message`, `2 messages` (`many`: the plural when it is not `word` + s)."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def age_text(seconds: float) -> str:
    """An age as people say it: 45s, 12m, 5h, 3d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"
