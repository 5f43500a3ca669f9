"""One received batch, from receive to settle, with its own state.

- While it is in delivery, a lease heartbeat extends the messages' visibility at half the
  lease (never past the 12 hours SQS allows from the receive).
- The DLQ's facts are learned first (the first batch reads the redrive sources and the
  retention), then the pipeline decides every message.
- Aborted (shutdown past its grace): deliveries are cancelled and the messages released
  (visibility 0). Crashed (a bug): the messages come back after a minute, so a bug cannot spin
  on them. Either way nothing is lost.
- The settle runs shielded, bounded in time: a cancelled shutdown still settles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import anyio
import structlog

from worker.aws.sources import DlqFacts
from worker.aws.sqs import SqsQueue
from worker.core.envelope import DlqMessage
from worker.core.outcomes import Decision, Release, Retry
from worker.core.policy import visibility_left
from worker.dlq.pipeline import Pipeline
from worker.dlq.settle import Settler

SETTLE_DEADLINE_SECONDS = 20  # a shielded settle never holds shutdown longer than this
CRASH_RETRY_SECONDS = 60.0


class Batch:
    def __init__(
        self,
        messages: Sequence[DlqMessage],
        received_at: float,
        *,
        dlq: SqsQueue,
        facts: DlqFacts,
        pipeline: Pipeline,
        settler: Settler,
        lease_seconds: int,
        delivered: Callable[[int], None],
        log: structlog.typing.FilteringBoundLogger,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.messages = messages
        self._received_at = received_at  # monotonic time of the receive (the visibility clock)
        self._dlq = dlq
        self._facts = facts
        self._pipeline = pipeline
        self._settler = settler
        self._lease = lease_seconds
        self._delivered = delivered  # hands the queue's room back once delivery has ended
        self._log = log
        self._monotonic = monotonic
        self._scope = anyio.CancelScope()

    def abort(self) -> None:
        """Cancel the deliveries; the messages are released, not lost."""
        self._scope.cancel()

    async def run(self) -> None:
        decisions: list[Decision] | None = None
        crashed = False
        try:
            with self._scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._heartbeat)
                    await self._facts.learn(self.messages)
                    decisions = await self._pipeline.run(self.messages)
                    tg.cancel_scope.cancel()
        except Exception:  # noqa: BLE001 - logged; the batch is kept, not lost
            self._log.exception("batch_failed", messages=len(self.messages))
            crashed = True
        finally:
            self._delivered(len(self.messages))
        if decisions is None:
            outcome = Retry(CRASH_RETRY_SECONDS, "InternalError") if crashed else Release()
            decisions = [Decision(m, 0, outcome) for m in self.messages]
        with anyio.CancelScope(shield=True), anyio.move_on_after(SETTLE_DEADLINE_SECONDS):
            try:
                await self._settler.settle(decisions, self._received_at)
            except Exception:  # noqa: BLE001 - logged; unsettled messages reappear
                self._log.exception("settle_failed", messages=len(self.messages))

    async def _heartbeat(self) -> None:
        """Extend the lease at half its length while the batch is in delivery."""
        while True:
            await anyio.sleep(self._lease / 2)
            extension = min(self._lease, visibility_left(self._received_at, self._monotonic()))
            if extension <= 0:
                return
            receipts = {m.message_id: (m.receipt_handle, extension) for m in self.messages}
            failed = await self._dlq.change_visibility(receipts)
            self._log.debug("lease_extended", seconds=extension, failed=len(failed))
