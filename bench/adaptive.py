"""How long the adaptive rate takes to settle under a target that throttles above 50 req/s.

A pure simulation on a fake clock (the bucket is pure code): each replica's bucket is set to
100 req/s (the ceiling), the target accepts 50 req/s in every 1-second window and throttles
the rest. "Settled" = from then on, every 10-second window has under 5 % throttled calls.
"""

from __future__ import annotations

import argparse
import heapq
from collections import Counter

from worker.core.bucket import TokenBucket

CAPACITY = 50.0
CEILING = 100.0
DURATION = 120.0
WINDOW = 10  # seconds: AIMD saws around the capacity, so judge it over a window


def simulate(replicas: int) -> tuple[float | None, float, float]:
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    buckets = [TokenBucket(CEILING, 20, clock) for _ in range(replicas)]
    accepted: Counter[int] = Counter()
    throttled: Counter[int] = Counter()
    # each replica calls as fast as its bucket allows: an event queue of next call times
    events = [(0.0, i) for i in range(replicas)]
    while events:
        t, i = heapq.heappop(events)
        if t > DURATION:
            break
        now[0] = t
        second = int(t)
        if accepted[second] < CAPACITY:
            accepted[second] += 1
            buckets[i].on_success()
        else:
            throttled[second] += 1
            buckets[i].on_throttle()
        heapq.heappush(events, (t + max(buckets[i].reserve(), 1e-4), i))
    settled = None
    for second in range(int(DURATION) - WINDOW):
        span = range(second, second + WINDOW)
        calls = sum(accepted[s] + throttled[s] for s in span)
        bad = calls and sum(throttled[s] for s in span) / calls >= 0.05
        if bad:
            settled = None
        elif settled is None:
            settled = float(second)
    tail = range(int(DURATION) - 30, int(DURATION))
    goodput = sum(accepted[s] for s in tail) / 30
    throttle_share = sum(throttled[s] for s in tail) / max(
        1, sum(accepted[s] + throttled[s] for s in tail)
    )
    return settled, goodput, throttle_share


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    print(f"target capacity {CAPACITY:.0f} req/s, bucket ceiling {CEILING:.0f} req/s per replica")
    print(f"{'replicas':>8} {'settled after':>14} {'goodput req/s':>14} {'throttled':>10}")
    for replicas in (1, 3):
        settled, goodput, share = simulate(replicas)
        when = f"{settled:.0f} s" if settled is not None else "never"
        print(f"{replicas:>8} {when:>14} {goodput:>14.1f} {share:>9.1%}")


if __name__ == "__main__":
    main()
