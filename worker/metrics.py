"""The metric families of SPEC.md, on an injected registry (no globals)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase

from worker import __version__

# Target calls take milliseconds (SQS, async invokes) to minutes (a synchronous Lambda or a
# waited-for state machine): buckets span 5 ms to 15 min.
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
# The data-loss clock looks at what was received this recently (a message settled since then
# no longer matters; one still waiting is received again and seen again).
TIME_LEFT_WINDOW_SECONDS = 900.0
# Backoffs span seconds to the 12 h visibility limit.
BACKOFF_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 43200)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "retry_worker_"
        self.received = Counter(
            p + "messages_received", "Messages received from DLQs.", ["queue"], registry=registry
        )
        self.deliveries = Counter(
            p + "deliveries",
            "Target calls by outcome.",
            ["queue", "target", "outcome"],
            registry=registry,
        )
        self.settled = Counter(
            p + "messages_settled",
            "Messages settled, by action.",
            ["queue", "action"],
            registry=registry,
        )
        self.delivery_duration = Histogram(
            p + "delivery_duration_seconds",
            "Time a target took to answer a delivery.",
            ["queue", "target"],
            buckets=DELIVERY_BUCKETS,
            registry=registry,
        )
        self.backoff = Histogram(
            p + "backoff_seconds",
            "Backoff applied to deferred messages.",
            ["queue"],
            buckets=BACKOFF_BUCKETS,
            registry=registry,
        )
        self.inflight = Gauge(
            p + "inflight_messages",
            "Messages received and not yet settled.",
            ["queue"],
            registry=registry,
        )
        self.circuit_state = Gauge(
            p + "circuit_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["target"],
            registry=registry,
        )
        self.circuit_transitions = Counter(
            p + "circuit_transitions",
            "Circuit breaker transitions.",
            ["target", "state"],
            registry=registry,
        )
        self.rate_limit_wait = Counter(
            p + "rate_limit_wait_seconds",
            "Time spent waiting for a rate-limit token.",
            ["target"],
            registry=registry,
        )
        self.receive_requests = Counter(
            p + "receive_requests",
            "ReceiveMessage calls by result.",
            ["queue", "result"],
            registry=registry,
        )
        self.aws_errors = Counter(
            p + "aws_errors",
            "Failed AWS API calls.",
            ["service", "operation", "error"],
            registry=registry,
        )
        self.aws_requests = Counter(
            p + "aws_requests",
            "HTTP requests made to AWS (each is billed), retries included.",
            ["service", "operation"],
            registry=registry,
        )
        self.queue_messages = Gauge(
            p + "queue_messages", "Approximate DLQ depth.", ["queue", "state"], registry=registry
        )
        self.unparkable = Counter(
            p + "unparkable_messages",
            "Messages kept in their DLQ because no parking form fits the parking queue.",
            ["queue"],
            registry=registry,
        )
        self.paused = Gauge(
            p + "queue_paused",
            "1 while the queue is paused (its DLQ tagged retry-worker:paused=true).",
            ["queue"],
            registry=registry,
        )
        self.coordination_members = Gauge(
            p + "coordination_members",
            "Live replicas sharing the budgets (coordination.backend: dynamodb).",
            registry=registry,
        )
        self.coordination_degraded = Gauge(
            p + "coordination_degraded",
            "1 while the coordination table is failing (last known share kept).",
            registry=registry,
        )
        self.decisions = Counter(
            p + "decisions",
            "Messages a queue's rules, transform or hook decided (action: deliver, defer, "
            "park; error: the hook failed).",
            ["queue", "by", "action"],
            registry=registry,
        )
        self.parked_messages = Gauge(
            p + "parked_messages",
            "Approximate messages in a parking queue (in flight included).",
            ["parking_queue"],
            registry=registry,
        )
        self.parked_oldest_age = Gauge(
            p + "parked_oldest_age_seconds",
            "Age of the oldest parked message (since its parked-at), as the keeper last saw it.",
            ["parking_queue"],
            registry=registry,
        )
        self.keeper_kept = Counter(
            p + "keeper_kept",
            "Parked messages the keeper re-parked before their parking queue's retention ended.",
            ["parking_queue"],
            registry=registry,
        )
        self.keeper_passes = Counter(
            p + "keeper_passes",
            "Keeper passes over a parking queue (result: complete, or incomplete: tried again).",
            ["parking_queue", "result"],
            registry=registry,
        )
        self.keeper_last_success = Gauge(
            p + "keeper_last_success_timestamp_seconds",
            "When the keeper last knew every message of the parking queue safe (epoch seconds).",
            ["parking_queue"],
            registry=registry,
        )
        self.account_up = Gauge(
            p + "account_up",
            "1 while a member account's role (accounts:) is assumed in a region; 0 while it "
            "cannot be (its queues wait, the others go on).",
            ["account", "region"],
            registry=registry,
        )
        self.queue_missing = Gauge(
            p + "queue_missing",
            "1 while a queue's DLQ or parking queue does not exist (at start, or its receives "
            "say so); 0 once it does.",
            ["queue"],
            registry=registry,
        )
        self.notifications = Counter(
            p + "notifications",
            "Digests to notification sinks, by outcome (sent, retried, failed: given up, "
            "dropped: the sink's queue was full).",
            ["sink", "outcome"],
            registry=registry,
        )
        self.build_info = Gauge(
            p + "build_info", "Build information.", ["version"], registry=registry
        )
        self.build_info.labels(version=__version__).set(1)
        self.retention = RetentionClock()
        registry.register(self.retention)

    def forget_parking_queue(self, parking_queue: str) -> None:
        """Another replica keeps it now: its numbers stand, not this replica's last ones."""
        for gauge in (self.parked_messages, self.parked_oldest_age, self.keeper_last_success):
            with contextlib.suppress(KeyError):
                gauge.remove(parking_queue)

    def forget_queue(self, queue: str) -> None:
        """A queue no longer served (discovery released it): its gauges go, or the last depth
        would stand for ever (and an alert on it with it)."""
        for state in ("visible", "in_flight", "delayed"):
            drop(self.queue_messages, queue, state)
        drop(self.paused, queue)
        drop(self.inflight, queue)
        drop(self.queue_missing, queue)
        self.retention.forget(queue)

    def account_state(self, account: str, region: str, up: bool, _why: str) -> None:
        self.account_up.labels(account, region).set(int(up))

    def count_request(self, service: str, operation: str) -> None:
        self.aws_requests.labels(service, operation).inc()


class RetentionClock:
    """The data-loss clock, per DLQ: its retention, and the least time a message had left
    before that retention drops it when it was received in the last 15 minutes. The worker
    parks a message that would expire before its next try; what this shows is the rest —
    messages that reach the worker late (a backlog, a queue paused or blocked for days)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # observed in the event loop, collected by the scrape
        self._retention: dict[str, float] = {}
        # Per queue, a sliding-window minimum: (observed at, time left), times left rising.
        self._seen: dict[str, deque[tuple[float, float]]] = {}

    def observe(self, queue: str, retention: float, time_left: float | None) -> None:
        now = self._clock()
        with self._lock:
            self._retention[queue] = retention
            if time_left is None:
                return
            window = self._seen.setdefault(queue, deque())
            while window and window[-1][1] >= time_left:
                window.pop()
            window.append((now, time_left))
            self._expire(window, now)  # bounded whether or not anything scrapes

    @staticmethod
    def _expire(window: deque[tuple[float, float]], now: float) -> None:
        while window and now - window[0][0] > TIME_LEFT_WINDOW_SECONDS:
            window.popleft()

    def forget(self, queue: str) -> None:
        with self._lock:
            self._retention.pop(queue, None)
            self._seen.pop(queue, None)

    def collect(self) -> Iterator[Metric]:
        left = GaugeMetricFamily(
            "retry_worker_dlq_time_left_seconds",
            "Least time a message received from the DLQ in the last 15 minutes had before its "
            "retention ends (absent: nothing received).",
            labels=["queue"],
        )
        retention = GaugeMetricFamily(
            "retry_worker_dlq_retention_seconds",
            "The DLQ's MessageRetentionPeriod, as read with its first batch.",
            labels=["queue"],
        )
        now = self._clock()
        with self._lock:
            for queue, window in self._seen.items():
                self._expire(window, now)
                if window:
                    left.add_metric([queue], window[0][1])
            for queue, seconds in self._retention.items():
                retention.add_metric([queue], seconds)
        yield left
        yield retention


class Series:
    """Labelled series, each looked up once (`labels()` takes a lock and builds a key every
    time; a busy queue counts thousands of messages a second). Created when first asked for,
    as with `labels()`. Not for series that are ever removed (`drop`)."""

    def __init__(self) -> None:
        self._known: dict[tuple[object, tuple[str, ...]], Any] = {}

    def __call__(self, metric: MetricWrapperBase, *labels: str) -> Any:
        key = (metric, labels)
        child = self._known.get(key)
        if child is None:
            child = self._known[key] = metric.labels(*labels)
        return child


def drop(gauge: Gauge, *labels: str) -> None:
    """Remove a child series (absent reads as 0): idle queues cost few series."""
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)
