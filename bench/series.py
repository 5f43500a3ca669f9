"""How many time series does a configuration export? Touches every label combination a
deployment of N queues (each with its own target) produces, and counts the samples."""

from __future__ import annotations

import argparse

from prometheus_client import CollectorRegistry, disable_created_metrics

from worker.metrics import Metrics

OUTCOMES = ("success", "retryable", "throttled", "permanent")
ACTIONS = ("deleted", "deferred", "parked", "released")
RESULTS = ("messages", "empty", "error")
STATES = ("visible", "in_flight", "delayed")
BREAKER = ("open", "half_open", "closed")


def count(queues: int) -> dict[str, int]:
    disable_created_metrics()
    metrics = Metrics(CollectorRegistry())
    for i in range(queues):
        q, t = f"queue-{i}", f"target-{i}"
        metrics.received.labels(q)
        for outcome in OUTCOMES:
            metrics.deliveries.labels(q, t, outcome)
        for action in ACTIONS:
            metrics.settled.labels(q, action)
        metrics.delivery_duration.labels(q, t)
        metrics.backoff.labels(q)
        metrics.inflight.labels(q)
        metrics.circuit_state.labels(t)
        for state in BREAKER:
            metrics.circuit_transitions.labels(t, state)
        metrics.rate_limit_wait.labels(t)
        for result in RESULTS:
            metrics.receive_requests.labels(q, result)
        for state in STATES:
            metrics.queue_messages.labels(q, state)
    return {f.name: len(f.samples) for f in metrics.registry.collect()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queues", type=int, default=50)
    args = parser.parse_args()
    families = count(args.queues)
    for name, samples in families.items():
        print(f"{name:<45} {samples:>6}")
    print(f"{'total':<45} {sum(families.values()):>6}")
    print("(aws_errors adds one series per failing service, operation and error code)")


if __name__ == "__main__":
    main()
