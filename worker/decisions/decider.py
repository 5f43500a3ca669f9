"""One queue's decisions for one message: rules → transform → hook (SPEC.md, Decisions).

The same code decides in the daemon and in `retry-worker explain` (which asks for a `Trace`).
The message view is built once per message. Nothing here calls the target or touches a queue;
what a verdict becomes (a delivery, a retry, a park) is the pipeline's business.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from worker.aws.clients import Clients
from worker.core.envelope import DlqMessage
from worker.core.errors import DeliveryError, ErrorKind
from worker.decisions.expressions import ExpressionFailed, Transform, compile_rules
from worker.decisions.hook import Hook, LambdaHook, PythonHook
from worker.decisions.keys import IdempotencyKey
from worker.decisions.verdicts import By, Verdict
from worker.decisions.view import View, build_view, with_payload
from worker.hooks import Decision, Defer, Deliver, Park
from worker.metrics import Metrics
from worker.settings import LambdaHookSpec, QueueSettings
from worker.settings.decisions import load_hook

log = structlog.get_logger("worker.decisions.decider")


@dataclass
class Trace:
    """Every step's finding, for `explain`."""

    view: View = field(default_factory=dict)
    rules: list[dict[str, Any]] = field(default_factory=list)
    transform: dict[str, Any] | None = None
    hook: dict[str, Any] | None = None


class Decider:
    def __init__(
        self,
        queue: str,
        settings: QueueSettings,
        hook: Hook | None,
        metrics: Metrics | None = None,
        *,
        log_bodies: bool = False,
    ) -> None:
        self.queue = queue
        self._rules = compile_rules(settings.rules)
        self._transform = Transform(settings.transform) if settings.transform else None
        key = settings.idempotency_key
        self._key = IdempotencyKey(queue, key) if key else None
        self._hook = hook
        self._metrics = metrics
        self._counted: dict[tuple[str, str], Any] = {}  # metric children, by (by, action)
        self._unwrap = settings.target.kind == "auto"
        self._log_bodies = log_bodies
        self._log = log.bind(queue=queue)

    @classmethod
    async def build(
        cls,
        queue: str,
        settings: QueueSettings,
        clients: Clients,
        metrics: Metrics | None = None,
        *,
        log_bodies: bool = False,
    ) -> Decider | None:
        """None when the queue has nothing to decide (no cost per message then)."""
        if not settings.decides and settings.idempotency_key is None:
            return None
        return cls(
            queue, settings, await build_hook(settings, clients), metrics, log_bodies=log_bodies
        )

    def view(self, message: DlqMessage, attempt: int, now: float) -> View:
        return build_view(self.queue, message, attempt, now, unwrap=self._unwrap)

    async def decide_all(
        self, items: Sequence[tuple[DlqMessage, int]], now: float
    ) -> list[Verdict]:
        """Side by side (a slow hook holds only its own message)."""
        if self._hook is None or len(items) == 1:
            return [await self._decide_one(m, a, now) for m, a in items]
        verdicts: list[Verdict | None] = [None] * len(items)

        async def one(index: int, message: DlqMessage, attempt: int) -> None:
            verdicts[index] = await self._decide_one(message, attempt, now)

        async with anyio.create_task_group() as tg:
            for index, (message, attempt) in enumerate(items):
                tg.start_soon(one, index, message, attempt)
        return [v for v in verdicts if v is not None]

    async def _decide_one(self, message: DlqMessage, attempt: int, now: float) -> Verdict:
        """One message's verdict. Whatever this message makes go wrong here is its own
        retryable failure (`DecisionError.<Type>`), never its batch-mates': a batch that
        failed would come back, receive after receive, until every message in it is parked
        `max_attempts` without a try."""
        try:
            return await self.decide(self.view(message, attempt, now))
        except Exception as exc:  # noqa: BLE001 - logged with its trace; the message retries
            self._log.exception("decision_failed", message_id=message.message_id)
            failure = DeliveryError(
                ErrorKind.RETRYABLE, f"DecisionError.{type(exc).__name__}", str(exc)[:500]
            )
            return self._count(Verdict(None, "default", failure=failure))

    async def decide(self, view: View, trace: Trace | None = None) -> Verdict:
        verdict = await self._decide(view, trace)
        if verdict.action == "deliver" and self._key is not None:
            verdict = dataclasses.replace(verdict, key=self._key.of(view))
        return verdict

    async def _decide(self, view: View, trace: Trace | None) -> Verdict:
        if trace is not None:
            trace.view = view
        verdict = self._by_rules(view, trace)
        if verdict is not None and verdict.action != "deliver":
            return self._count(verdict)
        matched_deliver = verdict is not None
        if verdict is not None:
            self._count(verdict)
        payload: str | None = None
        if self._transform is not None:
            try:
                payload = self._transform.apply(view)
            except ExpressionFailed as exc:
                if trace is not None:
                    trace.transform = {"expression": self._transform.text, "error": str(exc)}
                self._log.warning(
                    "transform_failed",
                    message_id=view["message_id"],
                    error=exc.code,
                    detail=exc.detail,
                )
                failed = Verdict(Park("transform_failed", exc.code), "transform")
                return self._count(failed)
            if trace is not None:
                trace.transform = {"expression": self._transform.text, "payload": payload}
            self._count(Verdict(Deliver(payload), "transform"))
        if self._hook is not None:
            answered = await self._ask_hook(view, payload, trace)
            if answered is not None:
                return answered
        by: By = "transform" if payload is not None else ("rule" if matched_deliver else "default")
        rule = verdict.rule if verdict is not None else None
        return Verdict(Deliver(payload), by, rule=rule)

    def _by_rules(self, view: View, trace: Trace | None) -> Verdict | None:
        for compiled in self._rules:
            rule = compiled.rule
            try:
                matched = compiled.matches(view)
            except ExpressionFailed as exc:
                if trace is not None:
                    trace.rules.append(
                        {"index": compiled.index, "when": rule.when, "error": str(exc)}
                    )
                self._log.warning(
                    "rule_failed",
                    message_id=view["message_id"],
                    rule=compiled.index,
                    error=exc.code,
                    detail=exc.detail,
                )
                return Verdict(Park("rule_failed", exc.code), "rule", rule=compiled.index)
            if trace is not None:
                trace.rules.append(
                    {
                        "index": compiled.index,
                        "name": rule.name,
                        "when": rule.when,
                        "action": rule.action,
                        "matched": matched,
                    }
                )
            if not matched:
                continue
            decision: Decision
            if rule.action == "park":
                decision = Park(rule.reason or "", f"Rule.{rule.name or compiled.index}")
            elif rule.action == "defer":
                decision = Defer(float(rule.delay_seconds or 0), rule.reason or "deferred")
            else:
                return Verdict(Deliver(), "rule", rule=compiled.index)
            self._log.info(
                "rule_matched",
                message_id=view["message_id"],
                attempt=view["attempt"],
                rule=rule.name or compiled.index,
                action=rule.action,
                reason=decision.reason,
                **({"delay": decision.seconds} if isinstance(decision, Defer) else {}),
            )
            return Verdict(decision, "rule", rule=compiled.index)
        return None

    async def _ask_hook(
        self, view: View, payload: str | None, trace: Trace | None
    ) -> Verdict | None:
        assert self._hook is not None
        seen = with_payload(view, payload) if payload is not None else view
        try:
            answer = await self._hook(seen)
        except DeliveryError as failure:
            if trace is not None:
                trace.hook = {"name": self._hook.name, "error": str(failure)}
            detail = failure.detail if self._log_bodies or failure.code == "HookTimeout" else None
            self._log.warning(
                "hook_failed", message_id=view["message_id"], error=failure.code, detail=detail
            )
            return self._count(Verdict(None, "hook", failure=failure))
        if trace is not None:
            trace.hook = {"name": self._hook.name, "decision": _described(answer)}
        match answer:
            case None:
                return None
            case Deliver(payload=new):
                return self._count(Verdict(Deliver(new if new is not None else payload), "hook"))
            case Defer(seconds=seconds, reason=reason):
                return self._count(Verdict(Defer(float(seconds), reason), "hook"))
            case Park(reason=reason, error=error):
                return self._count(Verdict(Park(reason, error or "Hook"), "hook"))
        return None  # pragma: no cover - `checked` allows nothing else

    def _count(self, verdict: Verdict) -> Verdict:
        if self._metrics is not None:
            key = (verdict.by, "error" if verdict.action == "failed" else verdict.action)
            child = self._counted.get(key)
            if child is None:  # created on first use: a queue's series only once it decides
                child = self._counted[key] = self._metrics.decisions.labels(self.queue, *key)
            child.inc()
        return verdict

    def close(self) -> None:
        if self._hook is not None:
            self._hook.close()


def _described(answer: Any) -> dict[str, Any] | None:
    match answer:
        case Deliver(payload=payload):
            return {"action": "deliver", "payload": payload}
        case Defer(seconds=seconds, reason=reason):
            return {"action": "defer", "delay_seconds": seconds, "reason": reason}
        case Park(reason=reason, error=error):
            return {"action": "park", "reason": reason, "error": error}
    return None


async def build_hook(settings: QueueSettings, clients: Clients) -> Hook | None:
    spec = settings.hook
    timeout = settings.hook_timeout_seconds
    if spec is None:
        return None
    if isinstance(spec, LambdaHookSpec):
        return LambdaHook(await clients.get("lambda"), spec.function, timeout=timeout)
    return PythonHook(spec, load_hook(spec), timeout=timeout, threads=settings.concurrency)
