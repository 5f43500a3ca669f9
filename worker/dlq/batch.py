"""One received batch, from receive to settle, with its own state.

- While it is in delivery, a lease heartbeat extends the unsettled messages' visibility at
  half the lease (never past the 12 hours SQS allows from the receive).
- The DLQ's facts are learned first (the first batch reads the redrive sources and the
  retention), then the pipeline decides every message.
- Decisions are settled as they come, in small groups: the first one waits up to `LINGER`
  for the others (so a happy batch still settles in one call per kind), then whatever is
  decided is settled. A slow or hanging call holds back only its own message, and a SIGKILL
  finds most of a batch's delivered messages already deleted.
- Aborted (shutdown past its grace): deliveries are cancelled; what was decided is settled as
  decided (a delivered message is deleted, not delivered again), and only the undecided are
  released (visibility 0). Crashed (a bug): the decided are settled, the undecided come back
  after a minute, so a bug cannot spin on them. Either way nothing is lost.
- Each settle runs shielded, bounded in time: a cancelled shutdown still settles.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream

from worker.aws.errors import error_code
from worker.aws.facts import DlqFacts
from worker.aws.sqs import EntryFailure, SqsQueue
from worker.core.envelope import DlqMessage
from worker.core.outcomes import Release, Retry, Settlement
from worker.core.policy import visibility_left
from worker.dlq.pipeline import Pipeline
from worker.dlq.room import Taken
from worker.dlq.settle import Settler

SETTLE_DEADLINE_SECONDS = 20  # a shielded settle never holds shutdown longer than this
CRASH_RETRY_SECONDS = 60.0
LEASE_MARGIN_SECONDS = 1.0  # a lease this close to its end is treated as ended (at most)
LINGER_SECONDS = 0.5  # a settlement waits this long for the rest of its batch before settling
# A lease extension refused for these (a sender fault): the handle is no longer this batch's
# (SQS: "Message does not exist or is not available for visibility timeout change").
LEASE_GONE_CODES = frozenset({"ReceiptHandleIsInvalid", "InvalidParameterValue"})


def lease_gone(failure: EntryFailure) -> bool:
    """A refused extension that says the handle is no longer ours (not a whole call that
    failed, nor a visibility past SQS's 12-hour limit)."""
    return (
        failure.sender_fault
        and failure.code in LEASE_GONE_CODES
        and "VisibilityTimeout" not in failure.message
    )


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
        taken: Taken,
        log: structlog.typing.FilteringBoundLogger,
        monotonic: Callable[[], float] = time.monotonic,
        learned: Callable[[Sequence[DlqMessage]], None] | None = None,
    ) -> None:
        self.messages = messages
        self._received_at = received_at  # monotonic time of the receive (the visibility clock)
        self._dlq = dlq
        self._facts = facts
        self._pipeline = pipeline
        self._settler = settler
        self._lease = lease_seconds
        self._taken = taken  # the queue's room this batch holds: delivery, then settling
        self._log = log
        self._monotonic = monotonic
        self._learned = learned  # told once the DLQ's facts are known (the data-loss clock)
        self._scope = anyio.CancelScope()
        self._lease_ends = [received_at + lease_seconds] * len(messages)  # monotonic
        self._settled: set[int] = set()  # indexes settled (or tried: a failed one reappears)
        self._all_settled = anyio.Event()

    def abort(self) -> None:
        """Cancel the deliveries; the messages are released, not lost."""
        self._scope.cancel()

    async def run(self) -> None:
        count = len(self.messages)
        made: dict[int, Settlement] = {}
        send, receive = anyio.create_memory_object_stream[int](max_buffer_size=math.inf)

        def sink(index: int, settlement: Settlement) -> None:
            made[index] = settlement
            send.send_nowait(index)

        crashed = False
        try:
            with self._scope, send, receive:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._heartbeat)
                    tg.start_soon(self._settle_as_decided, receive, made)
                    await self._facts.learn(self.messages)
                    if self._learned is not None:
                        self._learned(self.messages)
                    await self._pipeline.run(self.messages, sink, self.holds)
                    # Delivered: the next receive need not wait for these deletes.
                    await self._taken.hand_over()
                    await self._all_settled.wait()
                    tg.cancel_scope.cancel()
        except Exception:  # noqa: BLE001 - logged; the batch is kept, not lost
            self._log.exception("batch_failed", messages=count)
            crashed = True
        finally:
            if not self._taken.handed_over:  # nothing more is delivered: room for the next
                self._taken.end()
        try:
            rest = [i for i in range(count) if i not in self._settled]
            if rest:
                untried = Retry(CRASH_RETRY_SECONDS, "InternalError") if crashed else Release()
                await self._settle(
                    rest, [made.get(i) or Settlement(self.messages[i], 0, untried) for i in rest]
                )
        finally:
            self._taken.end()

    async def _settle_as_decided(
        self, made_now: MemoryObjectReceiveStream[int], made: dict[int, Settlement]
    ) -> None:
        count = len(self.messages)
        pending: list[int] = []
        async for index in made_now:
            pending.append(index)
            with contextlib.suppress(anyio.WouldBlock):  # made together: no timer
                while len(self._settled) + len(pending) < count:
                    pending.append(made_now.receive_nowait())
            if len(self._settled) + len(pending) < count:
                with anyio.move_on_after(LINGER_SECONDS):
                    while len(self._settled) + len(pending) < count:
                        pending.append(await made_now.receive())
            await self._settle(pending, [made[i] for i in pending])
            pending = []
            if len(self._settled) == count:
                self._all_settled.set()
                return

    async def _settle(self, indexes: list[int], settlements: list[Settlement]) -> None:
        # A retry's visibility is not set on a message whose lease may have lapsed: it is
        # visible again already (or another receive holds it), and setting it would hide it
        # from its own FIFO group. It comes back sooner than its backoff; nothing is lost.
        settlements = [
            dataclasses.replace(d, outcome=Release("lease_lapsed"))
            if isinstance(d.outcome, Retry) and not self.holds(i)
            else d
            for i, d in zip(indexes, settlements, strict=True)
        ]
        with anyio.CancelScope(shield=True), anyio.move_on_after(SETTLE_DEADLINE_SECONDS):
            try:
                await self._settler.settle(settlements, self._received_at)
            except Exception:  # noqa: BLE001 - logged; unsettled messages reappear
                self._log.exception("settle_failed", messages=len(settlements))
        self._settled.update(indexes)  # before any checkpoint: a cancel cannot lose this

    def holds(self, index: int) -> bool:
        """Whether this batch's lease on message `index` surely still runs. Once it may have
        lapsed, SQS may have given the message to another receive: delivering it from here
        could overtake its own FIFO group."""
        margin = min(LEASE_MARGIN_SECONDS, self._lease / 4)  # the heartbeat comes at half
        return self._monotonic() < self._lease_ends[index] - margin

    async def _heartbeat(self) -> None:
        """Extend the lease at half its length while the batch is in delivery (sooner again
        after an extension that failed)."""
        pause = self._lease / 2
        started = self._received_at
        while True:
            # The cadence counts from the last extension's start, not its end: a slow call
            # must not push the next one past the point where the lease may have lapsed.
            await anyio.sleep(max(0.0, started + pause - self._monotonic()))
            started = self._monotonic()
            extension = min(self._lease, visibility_left(self._received_at, started))
            if extension <= 0:
                return
            # Never one whose lease may have lapsed: SQS may have handed it to another receive
            # (and an emulator would take the old receipt, hiding the message from its group).
            ids = {
                m.message_id: i
                for i, m in enumerate(self.messages)
                if i not in self._settled and self.holds(i)
            }
            if not ids:
                return
            receipts = {mid: (self.messages[i].receipt_handle, extension) for mid, i in ids.items()}
            try:
                refused = await self._dlq.change_visibility(receipts)
            except Exception as exc:  # noqa: BLE001 - the lease runs out; said, tried again
                self._log.warning("lease_extension_failed", error=error_code(exc))
                refused = {}
                failed = set(receipts)
            else:
                failed = set(refused)
            for mid, i in ids.items():
                if mid not in failed:
                    self._lease_ends[i] = started + extension
                elif (gone := refused.get(mid)) is not None and lease_gone(gone):
                    # SQS no longer knows this handle (the message was received again, or
                    # deleted): the lease is over now; asking again would only be refused.
                    self._lease_ends[i] = started
            pause = min(self._lease / 2, 1.0) if failed else self._lease / 2
            self._log.debug("lease_extended", seconds=extension, failed=len(failed))
