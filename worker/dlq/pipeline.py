"""The per-message pipeline: attempt → gate → loop check → the queue's decisions (rules,
transform, hook: `worker.decisions`) → deliver through the guard → outcome. It returns
`Settlement` values (`worker.core.outcomes`); it never touches the DLQ.

FIFO DLQs, whatever the target:
the messages of a group are delivered one at a time in receive order, in rounds (one message
of every group per round, groups side by side). When one is not accepted (deferred, or refused
by the breaker), the rest of its group is handed back untried, to come back after it; those
receives are not counted as attempts (`WaitLedger`).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence

import structlog

from worker.aws.facts import DlqFacts
from worker.core.envelope import DlqMessage
from worker.core.errors import DeliveryError
from worker.core.loopguard import Loops, fingerprint
from worker.core.notices import Notices
from worker.core.outcomes import Delivered, Outcome, Park, Release, Retry, Settlement
from worker.core.policy import attempt_number, gate, on_failure
from worker.core.rounds import GroupRounds
from worker.core.waiting import WaitLedger
from worker.decisions.decider import Decider
from worker.decisions.verdicts import settled_as
from worker.settings import PolicySettings
from worker.targets.base import Delivery, Target
from worker.targets.guard import Guard, Tried

log = structlog.get_logger("worker.dlq.pipeline")

Sink = Callable[[int, Settlement], None]


def _always(index: int) -> bool:
    return True


class Settlements:
    """The settlements of one run, by message index. `settle` records one and hands it to the
    sink (the batch settles it as it comes): settling is that explicit call, never a side
    effect."""

    def __init__(self, sink: Sink | None) -> None:
        self._by_index: dict[int, Settlement] = {}
        self._sink = sink

    def settle(self, index: int, settlement: Settlement) -> None:
        # Settling twice would delete or park twice: one settlement per message, always.
        assert index not in self._by_index, f"message {index} settled twice"
        self._by_index[index] = settlement
        if self._sink is not None:
            self._sink(index, settlement)

    def __getitem__(self, index: int) -> Settlement:
        return self._by_index[index]

    def values(self) -> list[Settlement]:
        return list(self._by_index.values())


class Pipeline:
    def __init__(
        self,
        policy: PolicySettings,
        target: Target,
        guard: Guard,
        facts: DlqFacts,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        loops: Loops | None = None,
        loop_key: str = "",
        fifo: bool = False,
        decider: Decider | None = None,
        queue: str = "",
        notices: Notices | None = None,
    ) -> None:
        self.policy = policy
        self.queue = queue  # the logical name, for the target's context
        self.target = target
        self._guard = guard
        self._facts = facts  # what the first batch learns: redrive sources, retention
        self._clock = clock
        self._rng = rng or random.Random()
        self._loops = loops
        self._loop_key = loop_key or target.name
        # Every target takes a FIFO group one message at a time (a round takes the head of
        # every group, side by side): after a failed or deferred message the rest of its group
        # is held back, with batch targets too (a failed entry in the middle of a request
        # would otherwise be overtaken by the entries after it).
        self.in_group_order = fifo
        self.waiting = WaitLedger()
        self._decider = decider  # the queue's rules, transform and hook, if it has any
        # None: nobody to tell (no `notify:` sinks), and nothing computed for it per message
        self._notices = notices

    async def _looping(self, candidates: list[tuple[int, Delivery]]) -> set[int]:
        """The indexes of payloads that keep coming back as new DLQ messages through a
        hand-off target (counted for the whole batch at once)."""
        if self._loops is None:
            return set()
        handed_off = [(i, d.message) for i, d in candidates if self.target.loops_back(d.message)]
        if not handed_off:
            return set()
        seen = [self._loop_seen(m) for _, m in handed_off]
        counts = await self._loops.counts(seen)
        limit = self.policy.max_attempts
        return {i for (i, _), n in zip(handed_off, counts, strict=True) if n >= limit}

    def _loop_seen(self, message: DlqMessage) -> tuple[str, str]:
        """(fingerprint, identity) as the target tells them; the body and the message id
        should it fail (one odd message is its own problem, never its batch's)."""
        try:
            payload, identity = self.target.loop_seen(message)
        except Exception:
            log.exception("loop_seen_failed", queue=self.queue, message_id=message.message_id)
            payload, identity = message.body, message.message_id
        return fingerprint(self._loop_key, payload), identity

    def _tell(self, new: list[str]) -> None:
        """The notifier only counts; should it fail all the same, the batch goes on."""
        assert self._notices is not None
        try:
            self._notices.received(self.queue, new)
        except Exception:
            log.exception("notice_failed", queue=self.queue)

    async def run(
        self,
        messages: Sequence[DlqMessage],
        sink: Sink | None = None,
        holds: Callable[[int], bool] | None = None,
    ) -> list[Settlement]:
        """Every message's settlement, in order. `sink(index, settlement)` hears each one as it
        is made (the batch settles them as they come); `holds(index)`: whether the batch's
        lease on a message surely still runs (a FIFO group is not delivered past it)."""
        now = self._clock()
        settled = Settlements(sink)
        to_deliver: list[tuple[int, Delivery]] = []
        messages = [self._facts.verified(m) for m in messages]
        new: list[str] = []  # first receives since the message arrived (not retries coming back)
        for index, message in enumerate(messages):
            counted = attempt_number(message, self._facts.arrived_with(message))
            if counted == 1:
                new.append(message.message_id)
            attempt = max(1, counted - self.waiting.untried(message.message_id))
            parked: Park | None = gate(message, attempt, self.policy, now)
            if parked:
                settled.settle(index, Settlement(message, attempt - 1, parked))
            else:
                to_deliver.append((index, Delivery(message, attempt, queue=self.queue)))
        if self._notices is not None:
            self._tell(new)
        looping = await self._looping(to_deliver)
        for index, delivery in to_deliver:
            if index in looping:
                loop = Park("loop_detected", "LoopDetected")
                settled.settle(index, Settlement(delivery.message, delivery.attempt - 1, loop))
        to_deliver = [item for item in to_deliver if item[0] not in looping]
        if self.in_group_order:
            await self._deliver_in_group_order(to_deliver, settled, holds or _always)
        else:
            await self._deliver(to_deliver, settled)
        for settlement in settled.values():
            self._keep_count(settlement)
        return [settled[i] for i in range(len(messages))]

    def _keep_count(self, settlement: Settlement) -> None:
        mid = settlement.message.message_id
        match settlement.outcome:
            case Release(reason="waiting_for_group"):
                self.waiting.handed_back(mid)
            case Delivered() | Park():
                self.waiting.forget(mid)

    async def _deliver_in_group_order(
        self,
        pending: list[tuple[int, Delivery]],
        settled: Settlements,
        holds: Callable[[int], bool],
    ) -> None:
        rounds = GroupRounds(pending, lambda item: item[1].message.group_id or "")
        while rounds:
            # The lease may have lapsed: SQS may have handed the group to another receive.
            # Delivering it from here could overtake it; let that one have it.
            for index, delivery in rounds.drop(lambda item: not holds(item[0])):
                lapsed = Release("lease_lapsed")
                settled.settle(index, Settlement(delivery.message, delivery.attempt - 1, lapsed))
            heads = rounds.next_round()
            if not heads:
                break
            await self._deliver(heads, settled)
            for head in heads:
                if isinstance(settled[head[0]].outcome, Retry):  # not accepted: the group waits
                    for index, delivery in rounds.refused(head):
                        untried = Release("waiting_for_group")
                        settled.settle(
                            index, Settlement(delivery.message, delivery.attempt - 1, untried)
                        )

    async def _decide(
        self, to_deliver: list[tuple[int, Delivery]], settled: Settlements
    ) -> list[tuple[int, Delivery]]:
        """The queue's decisions, just before delivery: what they park or defer is decided
        here, without a target call; the rest is delivered with the payload they made."""
        if self._decider is None or not to_deliver:
            return to_deliver
        now = self._clock()
        items = [(d.message, d.attempt) for _, d in to_deliver]
        verdicts = await self._decider.decide_all(items, now)
        ready = []
        retention = self._facts.retention_seconds
        for (index, delivery), verdict in zip(to_deliver, verdicts, strict=True):
            message, attempt = delivery.message, delivery.attempt
            outcome = settled_as(verdict, attempt, message, self.policy, now, self._rng, retention)
            if outcome is None:
                delivery = dataclasses.replace(delivery, payload=verdict.payload, key=verdict.key)
                ready.append((index, delivery))
            else:
                settled.settle(index, Settlement(message, *outcome))
        return ready

    def _after_failure(
        self, error: DeliveryError, attempt: int, message: DlqMessage, now: float
    ) -> Retry | Park:
        return on_failure(
            error, attempt, message, self.policy, now, self._rng, self._facts.retention_seconds
        )

    async def _deliver(self, to_deliver: list[tuple[int, Delivery]], settled: Settlements) -> None:
        to_deliver = await self._decide(to_deliver, settled)
        if not to_deliver:
            return

        def answered(position: int, tried: Tried) -> None:
            # Each answer is decided (and settled) as it comes: a hanging call holds back
            # nothing but itself.
            index, delivery = to_deliver[position]
            message, attempt = delivery.message, delivery.attempt
            outcome: Outcome = Delivered()
            if tried.error is not None:
                outcome = self._after_failure(tried.error, attempt, message, self._clock())
            settled.settle(
                index, Settlement(message, attempt, outcome, tried.error, tried.duration)
            )

        results = await self._guard.deliver(
            self.target, [d for _, d in to_deliver], on_answer=answered
        )
        for (index, delivery), tried in zip(to_deliver, results, strict=True):
            if tried is None:
                # The breaker opened after this batch was received: not a try, come back later.
                refused = Retry(self._guard.retry_delay(), "CircuitOpen")
                settled.settle(index, Settlement(delivery.message, delivery.attempt - 1, refused))
