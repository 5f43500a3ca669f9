"""One parking queue's keeper: a check every interval, a pass only when one may be needed.

The margin the keeper works with is `keeper.margin_seconds`, at most half the queue's
retention; it checks every `interval_seconds`, at most every half of that margin (a short
retention is checked more often, never too seldom). A check reads the queue's attributes (one
request). A pass — reading the whole queue (`sweep.py`) — runs only when something may be near
its end: at the first check, when the oldest message the last complete pass left is due before
the next check, when the count fell (the oldest may be gone), at every check of a queue that is
itself some queue's dead-letter queue (SQS keeps a redriven message's old send time), or when
the last pass could not read everything. A message is re-parked once it is due before the next
check: sent `retention - margin - interval` ago or more.

With coordination, one replica at a time keeps a parking queue: a lease in the table, renewed
at every check, for less than the margin (a successor takes over before anything is due),
and given up when a check fails (a replica that cannot keep must not stop others). Without, every
replica may (at worst a duplicate, never a loss). A table that fails is no reason not to keep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import anyio
import structlog
from botocore.exceptions import BotoCoreError, ClientError

from worker.aws.attributes import KeptTag, read_depth_and_retention, read_kept, write_kept
from worker.aws.errors import error_code
from worker.aws.sqs import SqsQueue
from worker.core.parking import iso_time
from worker.keeper.receipts import release
from worker.keeper.sweep import WAIT_SECONDS, Pass, sweep
from worker.metrics import Metrics
from worker.settings import KeeperSettings

log = structlog.get_logger("worker.keeper.keeper")

HOLD_SECONDS = 60  # a pass hides what it reads this long at least (then longer if it must)
MAX_HOLD_SECONDS = 900  # and never longer (operators read the queue too), nor a quarter margin
FIRST_CHECK_SECONDS = 60  # the first check comes within this long of the start
RELEASE_SECONDS = 10  # a release at the end of a pass gives up after this (they come back)
SOURCES_SECONDS = 3600  # how often it asks whether the queue is itself a dead-letter queue


class Lease(Protocol):
    async def take(self, seconds: float) -> bool: ...

    async def give_up(self) -> None: ...


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
        self.name = queue.label  # its name; `<account>/<region>/<name>` in a member account
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
        self._fed: bool | None = None  # the queue is some queue's dead-letter queue
        self._fed_at = float("-inf")
        self._resumed = self._warned = False
        self.interval = settings.interval_seconds  # the next check's, once the retention is known
        self.outcome = ""  # the last check's: elsewhere, skipped, passed, failed

    async def run(self) -> None:
        """Check soon after the start (replicas started together spread out), then every
        interval, forever; a failed check is logged and tried again at the next."""
        first = min(self.interval, FIRST_CHECK_SECONDS)
        await anyio.sleep(random.uniform(0, first))  # spreading, not secrecy
        while True:
            await self.attempt()
            failed = self.outcome == "failed"  # soon again: the retention may be unknown yet
            await anyio.sleep(min(self.interval, FIRST_CHECK_SECONDS) if failed else self.interval)

    async def attempt(self) -> None:
        """One check whatever happens: a failure is logged, and the lease given up (a
        replica that cannot keep must not stop the others); the next check tries again."""
        try:
            await self.check()
        except Exception as exc:  # noqa: BLE001 - logged; the next check tries again
            self.outcome = "failed"
            self._log.warning("keeper_check_failed", error=error_code(exc))
            if self._lease is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_SECONDS):
                    await self._lease.give_up()

    async def check(self) -> Pass | None:
        """One check, and a pass if one may be needed (None: no pass). With coordination,
        only the lease's holder checks (and renews it, every time)."""
        retention, count, hidden = await self._attributes()
        margin = min(self._settings.margin_seconds, retention / 2)
        self.interval = min(self._settings.interval_seconds, margin / 2)
        if self._lease is not None and not await self._holds_lease(margin):
            self.outcome = "elsewhere"
            self._metrics.forget_parking_queue(self.name)  # the holder's numbers stand
            return None
        if not self._resumed:
            await self._resume()
        self._warn_once(retention, margin)
        m, q, now = self._metrics, self.name, self._wall()
        m.parked_messages.labels(q).set(count)
        if not await self._may_be_due(now, retention, margin, count):
            self.outcome = "skipped"
            self._ages(now, count)
            m.keeper_last_success.labels(q).set(now)
            return None
        done = await self._pass(retention - margin - self.interval, now, count, margin)
        # Held by someone when the pass began (an operator's read, the console): not all seen.
        # (Another reader during the pass shows as fewer read than the count; the count in
        # flight read again after the pass would be no proof: SQS's lags a minute behind, and
        # would show the pass's own holds.)
        if hidden and done.complete:
            done.incomplete("in_flight")
        self.outcome = "passed"
        self._record(done, count, now)
        if done.complete:
            await self._note(done)
        return done

    async def _pass(self, due_age: float, now: float, count: int, margin: float) -> Pass:
        cap = max(5.0, margin / 4)  # a hidden message still has three quarters left
        least = int(min(self._hold, cap))
        most = int(max(least, min(MAX_HOLD_SECONDS, cap)))
        done = Pass()
        try:
            await sweep(
                self.queue,
                max(0.0, due_age),
                now,
                done,
                hold=(least, most),
                wait=self._wait,
                expected=count,
                log=self._log,
            )
        except BaseException:  # stopping (or failed): a bounded release, they come back anyway
            with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_SECONDS):
                await release(self.queue, done.release)
            raise
        await release(self.queue, done.release)  # all of it: else they look held by others
        return done

    def _record(self, done: Pass, count: int, started: float) -> None:
        m, q = self._metrics, self.name
        m.keeper_kept.labels(q).inc(done.kept + done.doubled)
        m.keeper_passes.labels(q, "complete" if done.complete else "incomplete").inc()
        if done.complete:
            self._oldest_sent = done.oldest_sent if done.oldest_sent is not None else started
            self._oldest_parked = done.oldest_parked
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

    async def _may_be_due(self, now: float, retention: float, margin: float, count: int) -> bool:
        if self._oldest_sent is None or self._count_after_pass is None:
            return True
        if count < self._count_after_pass:
            return True  # some went (replayed, purged): the oldest may be among them
        if await self._is_fed(now):
            return True  # a redriven message keeps its old send time: any check may need it
        due = self._oldest_sent + retention - margin
        return now >= due - self.interval

    async def _is_fed(self, now: float) -> bool:
        if self._fed is None or now - self._fed_at > SOURCES_SECONDS:
            self._fed_at = now
            try:
                found = await self.queue.client.list_dead_letter_source_queues(
                    QueueUrl=self.queue.url, MaxResults=1
                )
                self._fed = bool(found.get("queueUrls"))
            except Exception as exc:  # noqa: BLE001 - unknown: assume it is (a pass, no loss)
                self._log.debug("keeper_sources_unread", error=error_code(exc))
                self._fed = True
        return self._fed

    def _ages(self, now: float, count: int) -> None:
        oldest = self._oldest_parked if count else None
        age = max(0.0, now - oldest) if oldest is not None else 0.0
        self._metrics.parked_oldest_age.labels(self.name).set(age)

    def _warn_once(self, retention: float, margin: float) -> None:
        if margin < self._settings.margin_seconds and not self._warned:
            self._warned = True  # once: the retention is the queue's owner's choice
            self._log.warning(
                "keeper_margin_capped",
                retention_seconds=retention,
                margin_seconds=margin,
                hint="a retention under twice keeper.margin_seconds: re-parked at half of it",
            )

    async def _holds_lease(self, margin: float) -> bool:
        """Take or renew the lease, for less than the margin: a holder that stops renewing
        hands over before anything it left can be due."""
        assert self._lease is not None
        seconds = min(1.5 * self.interval + HOLD_SECONDS, 0.9 * margin)
        try:
            return await self._lease.take(seconds)
        except (ClientError, BotoCoreError, OSError) as exc:  # the table is down: keep anyway
            self._log.warning("keeper_lease_failed", error=error_code(exc))
            return True  # a duplicate at worst

    async def _attributes(self) -> tuple[float, int, int]:
        """(retention, messages, of which in flight), one request."""
        depth, retention = await read_depth_and_retention(self.queue)
        assert retention is not None
        return retention, sum(depth.values()), depth["in_flight"]

    async def _note(self, done: Pass) -> None:
        """The pass's findings as the parking queue's tags: `status` and the console read
        them without reading the queue, and a restarted keeper starts from them."""
        oldest = done.oldest_parked
        note = KeptTag(
            iso_time(self._wall()),
            iso_time(oldest) if oldest else None,
            self._oldest_sent,
            self._count_after_pass,
        )
        try:
            await write_kept(self.queue, note)
        except Exception as exc:  # noqa: BLE001 - a note, not the keeping: logged
            self._log.warning("keeper_note_failed", error=error_code(exc))

    async def _resume(self) -> None:
        """Once, before the first check: what the last complete pass (of any replica) noted,
        so that a restart needs no pass of its own, and when that was (the stalled alert
        counts from it; from now if there is none)."""
        self._resumed = True
        last_success = self._wall()
        try:
            note = await read_kept(self.queue.client, self.queue.url)
        except Exception as exc:  # noqa: BLE001 - the first check passes instead
            self._log.debug("keeper_note_unread", error=error_code(exc))
            note = KeptTag(None, None)
        if note.kept_at and note.oldest_sent is not None and note.count is not None:
            self._oldest_sent, self._count_after_pass = note.oldest_sent, note.count
            parked = note.oldest_parked_at
            self._oldest_parked = datetime.fromisoformat(parked).timestamp() if parked else None
            last_success = datetime.fromisoformat(note.kept_at).timestamp()
        self._metrics.keeper_last_success.labels(self.name).set(last_success)
