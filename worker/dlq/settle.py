"""Settlement: turn settlements into SQS batch calls, metrics and logs.

Order matters for the promise that nothing is lost: park first, and delete only what the
target accepted or the parking queue accepted. A message whose delete or visibility change
still fails after retries is left to reappear (a duplicate at worst, never a loss).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from worker.aws.errors import OWN_CODES, metric_code
from worker.aws.sqs import SqsQueue, message_entry
from worker.core.errors import ErrorKind
from worker.core.limits import message_size
from worker.core.notices import Notices, ParkedNotice
from worker.core.outcomes import Delivered, Park, Release, Retry, Settlement
from worker.core.parking import ParkedMessage, build_parked, parking_metadata
from worker.core.policy import visibility_for
from worker.metrics import Metrics, Series
from worker.settings import VISIBILITY_LIMIT_SECONDS
from worker.targets.base import Target

log = structlog.get_logger("worker.dlq.settle")

# A message the parking queue refused is tried again after this long.
PARK_FAILED_RETRY_SECONDS = 60
# A message no parking form of which fits the parking queue is held this long (the longest
# visibility SQS allows): it cannot succeed by trying again, an operator has to act.
UNPARKABLE_HOLD_SECONDS = VISIBILITY_LIMIT_SECONDS
# Characters of a target's error message in a log line.
LOGGED_ERROR_CHARS = 200


def _delivery_outcome(settlement: Settlement) -> str:
    if settlement.error is None:
        return "success"
    if settlement.error.kind in (ErrorKind.THROTTLED, ErrorKind.PERMANENT):
        return settlement.error.kind.value
    return "retryable"


class Settler:
    def __init__(
        self,
        queue_name: str,
        dlq: SqsQueue,
        parking: SqsQueue,
        metrics: Metrics,
        *,
        target: Target,
        log_bodies: bool = False,
        notices: Notices | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = queue_name
        self._dlq = dlq
        self._parking = parking
        self._metrics = metrics
        self._target = target.name
        self._target_call = (target.service, target.operation)
        self._log_bodies = log_bodies
        self._notices = notices  # None: nobody to tell (no `notify:` sinks)
        self._clock = clock
        self._monotonic = monotonic
        self._log = log.bind(queue=queue_name, target=target.name)
        # A busy queue settles thousands of messages a second: each series is looked up once
        # (`labels()` takes a lock and builds a key every time), when first used (an idle
        # queue has none of them).
        self._series = Series()

    async def settle(self, settlements: Sequence[Settlement], received_at: float) -> None:
        """`received_at` is the monotonic time of the receive (the visibility clock)."""
        deletes: dict[str, str] = {}
        visibility: dict[str, tuple[str, int]] = {}
        now = self._monotonic()
        parks = [d for d in settlements if isinstance(d.outcome, Park)]
        parked_ok, unparkable, told = await self._park(parks)
        # Told at once: they are parked whatever happens next (a settle past its deadline is
        # cancelled at its next call, and what it parked would never be told).
        self._tell(told)
        for d in settlements:
            mid, receipt = d.message.message_id, d.message.receipt_handle
            match d.outcome:
                case Delivered():
                    deletes[mid] = receipt
                case Park() if mid in parked_ok:
                    deletes[mid] = receipt
                case Park():
                    hold = (
                        UNPARKABLE_HOLD_SECONDS if mid in unparkable else PARK_FAILED_RETRY_SECONDS
                    )
                    visibility[mid] = (receipt, visibility_for(hold, received_at, now))
                case Retry(delay=delay):
                    visibility[mid] = (receipt, visibility_for(delay, received_at, now))
                case Release(reason="lease_lapsed"):
                    pass  # another receive may hold it now: leave it alone
                case Release():
                    visibility[mid] = (receipt, 0)
        if deletes:
            failed = await self._dlq.delete(deletes)
            self._report("DeleteMessageBatch", failed)
        if visibility:
            failed = await self._dlq.change_visibility(visibility)
            self._report("ChangeMessageVisibilityBatch", failed)
        # Metrics and logs after the calls: a counted settlement is a finished one.
        self._record(settlements, parked_ok)

    async def _park(
        self, parks: Sequence[Settlement]
    ) -> tuple[set[str], set[str], list[ParkedNotice]]:
        """Send to the parking queue; returns the ids it accepted, those no parking form of
        which fits it, and the notices of what it parked."""
        if not parks:
            return set(), set(), []
        limit = await self._parking.max_message_bytes()
        entries = []
        by_entry: dict[str, Settlement] = {}
        unparkable: set[str] = set()
        parked_at = self._clock()
        for index, d in enumerate(parks):
            assert isinstance(d.outcome, Park)
            meta = parking_metadata(
                reason=d.outcome.reason,
                attempts=d.attempt,
                error=d.outcome.error,
                source_queue=self._dlq.url,
                parked_at=parked_at,
                group_id=d.message.group_id,
                source_arn=d.message.source_arn,  # SQS's, or our marker's once checked
                message_id=d.message.message_id,
                error_type=d.error.error_type if d.error is not None else None,
                error_message=d.error.detail if d.error is not None else None,
            )
            parked = build_parked(d.message, meta, limit)
            if parked is None:
                self._unparkable(d, limit)
                unparkable.add(d.message.message_id)
                continue
            entries.append(self._parking_entry(str(index), d, parked))
            by_entry[str(index)] = d
        if not entries:
            return set(), unparkable, []
        sent, failed = await self._parking.send(entries)
        for failure in failed.values():
            self._metrics.aws_errors.labels(
                "sqs", "SendMessageBatch", metric_code(failure.code)
            ).inc()
        for entry_id, failure in failed.items():
            d = by_entry[entry_id]
            self._log.error(
                "park_failed",
                message_id=d.message.message_id,
                error=failure.code,
                detail=failure.message,
                outcome="kept_in_dlq",
            )
        parked_ok = {d.message.message_id for i, d in by_entry.items() if i not in failed}
        told = [self._notice(by_entry[e["Id"]], e) for e in sent if e.get("Id") in by_entry]
        return parked_ok, unparkable, told

    def _notice(self, d: Settlement, sent: dict[str, Any]) -> ParkedNotice:
        assert isinstance(d.outcome, Park)
        said = d.error
        return ParkedNotice(
            self._name,
            d.outcome.reason,
            d.outcome.error or "none",
            str(sent.get("MessageId", "")),
            said.error_type if said is not None else None,
            said.detail if said is not None and said.detail else None,
        )

    def _tell(self, told: list[ParkedNotice]) -> None:
        """The notifier only counts; should it fail all the same, the settlement goes on:
        nothing depends on it."""
        if self._notices is None:
            return
        for notice in told:
            try:
                self._notices.parked(notice)
            except Exception:  # noqa: BLE001 - never the settlement's problem
                self._log.exception("notice_failed", message_id=notice.message_id)

    def _unparkable(self, d: Settlement, limit: int) -> None:
        """Logged once per receive (every 12 h at most), counted, alerted on."""
        assert isinstance(d.outcome, Park)
        self._metrics.unparkable.labels(self._name).inc()
        self._log.error(
            "unparkable",
            message_id=d.message.message_id,
            reason=d.outcome.reason,
            error=d.outcome.error,
            size=message_size(d.message.body, d.message.attributes),
            parking_limit=limit,
            outcome="held_in_dlq",
            hold_seconds=UNPARKABLE_HOLD_SECONDS,
        )

    def _parking_entry(self, entry_id: str, d: Settlement, parked: ParkedMessage) -> dict[str, Any]:
        message = d.message
        entry = message_entry(
            entry_id, parked.body, parked.attributes, trace_header=message.trace_header
        )
        if self._parking.is_fifo:
            # A message from a standard DLQ is a group of its own: under one shared group,
            # SQS would return nothing more of it while one parked message is being read, and
            # the operator commands would see only the first batch.
            entry["MessageGroupId"] = message.group_id or message.message_id
            entry["MessageDeduplicationId"] = f"park-{message.message_id}"
        return entry

    def _report(self, operation: str, failed: dict[str, Any]) -> None:
        """Entries that still failed after retries: the messages reappear (never lost)."""
        for mid, failure in failed.items():
            self._log.error(
                "settle_entry_failed",
                operation=operation,
                message_id=mid,
                error=failure.code,
                detail=failure.message,
                outcome="will_reappear",
            )
            self._metrics.aws_errors.labels("sqs", operation, metric_code(failure.code)).inc()

    def _context(self, d: Settlement) -> dict[str, Any]:
        ctx: dict[str, Any] = {"message_id": d.message.message_id, "attempt": d.attempt}
        if d.message.marker_invalid:  # counted as no earlier cycles; say so
            ctx["attempt_marker"] = "invalid"
        if d.error is not None:
            # What the target said: not a body, so logged without `log_bodies`, cut short.
            ctx["error_type"] = d.error.error_type
            if d.error.detail:
                ctx["error_message"] = d.error.detail[:LOGGED_ERROR_CHARS]
        if self._log_bodies:
            ctx["body"] = d.message.body
        return ctx

    def _record(self, settlements: Sequence[Settlement], parked_ok: set[str]) -> None:
        m, q, series = self._metrics, self._name, self._series
        for d in settlements:
            ctx = self._context(d)
            if d.duration is not None:
                outcome = _delivery_outcome(d)
                series(m.deliveries, q, self._target, outcome).inc()
                series(m.delivery_duration, q, self._target).observe(d.duration)
            if d.error is not None and d.error.code not in OWN_CODES:  # the target's API failed
                m.aws_errors.labels(*self._target_call, metric_code(d.error.code)).inc()
            match d.outcome:
                case Delivered():
                    series(m.settled, q, "deleted").inc()
                    self._log.info("delivered", outcome="delivered", **ctx)
                case Retry(delay=delay, error=error):
                    series(m.settled, q, "deferred").inc()
                    series(m.backoff, q).observe(delay)
                    self._log.info(
                        "deferred", outcome="deferred", error=error, delay=round(delay, 3), **ctx
                    )
                case Park() if d.message.message_id not in parked_ok:
                    series(m.settled, q, "deferred").inc()  # kept in the DLQ; logged in _park
                case Park(reason=reason, error=error):
                    series(m.settled, q, "parked").inc()
                    self._log.warning("parked", outcome="parked", reason=reason, error=error, **ctx)
                case Release(reason=reason):
                    series(m.settled, q, "released").inc()
                    self._log.info("released", outcome="released", reason=reason, **ctx)
