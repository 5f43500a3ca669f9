"""One parking queue's keeper: a check every `interval_seconds`, a pass only when one may be
needed.

A check reads the queue's attributes (its count and retention: one request). A pass — reading
the whole queue (`sweep.py`) — runs only when something may be near its end: at the first
check, when the last pass's oldest message is due before the next check, when the count fell
(the oldest may be gone: its age is learned again) or when the last pass could not read
everything (messages held by someone, too many in flight): every newer message is younger than
the oldest one a complete pass saw, so until then nothing needs reading.

With coordination, one replica at a time keeps a parking queue (a lease in the table, renewed
at every check and taken over when its holder stops renewing); without, every replica may (at
worst a duplicate, never a loss). A table that fails is no reason not to keep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import anyio
import structlog
from anyio.abc import TaskGroup

from worker.aws.attributes import KeptTag, read_kept, write_kept
from worker.aws.errors import error_code
from worker.aws.sqs import SqsQueue
from worker.keeper.sweep import WAIT_SECONDS, Pass, release, sweep
from worker.metrics import Metrics
from worker.settings import KeeperSettings

log = structlog.get_logger("worker.keeper.keeper")

HOLD_SECONDS = 60  # a pass hides a message at most this long (it comes back by itself)
FIRST_CHECK_SECONDS = 60  # the first check comes within this long of the start

Lease = Callable[[], Awaitable[bool]]


class Keeper:
    def __init__(
        self,
        queue: SqsQueue,
        settings: KeeperSettings,
        metrics: Metrics,
        *,
        lease: Lease | None = None,
        wall: Callable[[], float] = time.time,
        hold: int = HOLD_SECONDS,
        wait: int = WAIT_SECONDS,
    ) -> None:
        self.queue = queue
        self.name = queue.url.rsplit("/", 1)[-1]
        self._settings = settings
        self._metrics = metrics
        self._lease = lease
        self._wall = wall
        self._hold = hold
        self._wait = wait  # a receive's long poll: 1 s asks every server of the queue
        self._log = log.bind(parking_queue=self.name)
        self._oldest_sent: float | None = None  # unknown until a pass completes
        self._oldest_parked: float | None = None
        self._count_after_pass: int | None = None
        self._warned = False
        self._resumed = False

    async def run(self) -> None:
        """Check soon after the start (a restart learns the queue again; replicas started
        together spread out), then every `interval_seconds`, forever; a failed check is logged
        and tried again at the next."""
        first = min(self._settings.interval_seconds, FIRST_CHECK_SECONDS)
        await anyio.sleep(random.uniform(0, first))  # spreading, not secrecy
        while True:
            try:
                await self.check()
            except Exception as exc:  # noqa: BLE001 - logged; the next check tries again
                self._log.warning("keeper_check_failed", error=error_code(exc))
            await anyio.sleep(self._settings.interval_seconds)

    async def check(self) -> Pass | None:
        """One check, and a pass if one may be needed (None: no pass). With coordination,
        only the lease's holder checks (and renews it, every time)."""
        if self._lease is not None and not await self._holds_lease():
            return None
        if not self._resumed:
            await self._resume()
        retention, count, hidden = await self._attributes()
        m, q = self._metrics, self.name
        m.parked_messages.labels(q).set(count)
        margin = min(self._settings.margin_seconds, retention / 2)
        if margin < self._settings.margin_seconds and not self._warned:
            self._warned = True  # once: the retention is the queue's owner's choice
            self._log.warning(
                "keeper_margin_capped",
                retention_seconds=retention,
                margin_seconds=margin,
                hint="a retention under twice keeper.margin_seconds: re-parked at half of it",
            )
        now = self._wall()
        if not self._may_be_due(now, retention, margin, count):
            self._ages(now, count)
            m.keeper_last_success.labels(q).set(now)
            return None
        # What would be due before the next check is due now: one pass, not one too early
        # and another at the due time.
        due_age = max(0.0, retention - margin - self._settings.interval_seconds)
        done = Pass()
        try:
            await sweep(
                self.queue,
                due_age,
                now,
                done,
                hold=self._hold,
                wait=self._wait,
                expected=count,
                log=self._log,
            )
        finally:
            with anyio.CancelScope(shield=True):
                await release(self.queue, done.release)
        if hidden and done.complete:  # held by someone (an operator's read): not all seen
            done.complete, done.why = False, "in_flight"
        self._record(done, count)
        if done.complete:
            await self._note(done)
        return done

    async def _note(self, done: Pass) -> None:
        """The pass's findings as the parking queue's tags: `status` and the console read
        them without reading the queue, and a restarted keeper starts from them."""
        oldest = done.oldest_parked
        note = KeptTag(
            _iso(self._wall()),
            _iso(oldest) if oldest else None,
            self._oldest_sent,
            self._count_after_pass,
        )
        try:
            await write_kept(self.queue, note)
        except Exception as exc:  # noqa: BLE001 - a note, not the keeping: logged
            self._log.warning("keeper_note_failed", error=error_code(exc))

    async def _resume(self) -> None:
        """Once, before the first check: what the last complete pass (of any replica) noted,
        so that a restart needs no pass of its own. No note, or one that cannot be read: the
        first check passes."""
        self._resumed = True
        try:
            note = await read_kept(self.queue.client, self.queue.url)
        except Exception as exc:  # noqa: BLE001 - the first check passes instead
            self._log.debug("keeper_note_unread", error=error_code(exc))
            return
        if note.kept_at and note.oldest_sent is not None and note.count is not None:
            self._oldest_sent, self._count_after_pass = note.oldest_sent, note.count
            parked = note.oldest_parked_at
            self._oldest_parked = datetime.fromisoformat(parked).timestamp() if parked else None

    def _record(self, done: Pass, count: int) -> None:
        m, q = self._metrics, self.name
        m.keeper_kept.labels(q).inc(done.kept + done.doubled)
        m.keeper_passes.labels(q, "complete" if done.complete else "incomplete").inc()
        if done.complete:
            self._oldest_sent, self._oldest_parked = done.oldest_sent, done.oldest_parked
            self._count_after_pass = count - done.mended
            m.keeper_last_success.labels(q).set(self._wall())
        else:
            self._oldest_sent = None  # not known: the next check passes again
        self._ages(self._wall(), count)
        busy = done.kept or done.failed or done.mended or not done.complete
        (self._log.info if busy else self._log.debug)(
            "keeper_pass",
            read=done.read,
            kept=done.kept,
            doubled=done.doubled,
            mended=done.mended,
            failed=done.failed,
            complete=done.complete,
            **({"why": done.why} if done.why else {}),
        )

    def _may_be_due(self, now: float, retention: float, margin: float, count: int) -> bool:
        if self._oldest_sent is None or self._count_after_pass is None:
            return True
        if count < self._count_after_pass:
            return True  # some went (replayed, purged): the oldest may be among them
        due = self._oldest_sent + retention - margin
        return now >= due - self._settings.interval_seconds

    def _ages(self, now: float, count: int) -> None:
        oldest = self._oldest_parked if count else None
        age = max(0.0, now - oldest) if oldest is not None else 0.0
        self._metrics.parked_oldest_age.labels(self.name).set(age)

    async def _holds_lease(self) -> bool:
        assert self._lease is not None
        try:
            return await self._lease()
        except Exception as exc:  # noqa: BLE001 - the table is down: keep (a duplicate at worst)
            self._log.warning("keeper_lease_failed", error=error_code(exc))
            return True

    async def _attributes(self) -> tuple[float, int, int]:
        """(retention, messages, of which in flight)."""
        response = await self.queue.client.get_queue_attributes(
            QueueUrl=self.queue.url,
            AttributeNames=[
                "MessageRetentionPeriod",
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )
        attributes = response["Attributes"]
        hidden = int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0))
        count = int(attributes.get("ApproximateNumberOfMessages", 0)) + hidden
        return float(attributes["MessageRetentionPeriod"]), count, hidden


class Keepers:
    """One keeper per distinct parking queue of the process, started as each is resolved (two
    references to one queue — a name and a URL — keep it once)."""

    def __init__(
        self,
        settings: KeeperSettings,
        metrics: Metrics,
        tasks: TaskGroup,
        *,
        lease_for: Callable[[str], Lease] | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._tasks = tasks
        self._lease_for = lease_for  # with coordination: the table's lease for a queue URL
        self.keeping: dict[str, Keeper] = {}

    def start(self, queue: SqsQueue) -> None:
        if not self._settings.enabled or queue.url in self.keeping:
            return
        lease = self._lease_for(queue.url) if self._lease_for is not None else None
        keeper = self.keeping[queue.url] = Keeper(queue, self._settings, self._metrics, lease=lease)
        self._tasks.start_soon(keeper.run)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
