"""The file-descriptor budget: connection pools sized so the daemon never needs more
descriptors than it has.

Every connection is a descriptor, and a long poll holds one for up to 20 s. At start-up the
soft `RLIMIT_NOFILE` is raised to the hard limit; what is left after the descriptors already
open and a reserve (the HTTP server and its probes, logs, the event loop) is shared out between
the clients: target services get what their deliveries can use, up to half; SQS gets the rest.
Of the SQS pool a quarter is kept for settling (deletes, visibility changes, parking) and the
rest are poll slots. When there are more queues than poll slots, queues take turns: each
receive waits for a slot (first come, first served), so every queue is still served.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("worker.aws.descriptors")

# Descriptors kept out of the pools: the HTTP listener and a few concurrent probes or scrapes,
# stdio, the event loop's selector and self-pipe, the random source, a log file.
RESERVE = 24
MIN_POOL = 2
SETTLE_SHARE = 4  # a quarter of the SQS pool is never used by long polls
UNLIMITED_CAP = 1 << 20  # the soft limit to take when the hard limit is unlimited
# Which clients a target kind opens besides SQS.
TARGET_SERVICES = {
    "lambda": ("lambda",),
    "stepfunctions": ("stepfunctions",),
    "eventbridge": ("events",),
    "sns": ("sns",),
    "sqs": (),
    "auto": ("lambda", "stepfunctions", "sns"),
}


@dataclass(frozen=True)
class ConnectionPlan:
    limit: int  # the soft RLIMIT_NOFILE
    budget: int  # descriptors the pools may use
    sqs_pool: int
    target_pools: dict[str, int]  # by service
    poll_slots: int  # long polls at once; more queues than this take turns

    def pool_for(self, service: str) -> int:
        return self.sqs_pool if service == "sqs" else self.target_pools.get(service, MIN_POOL)

    def used(self) -> int:
        return self.sqs_pool + sum(self.target_pools.values())


def raise_descriptor_limit() -> int:
    """Raise the soft limit to the hard one; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = UNLIMITED_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("descriptor_limit_not_raised", soft=soft, hard=hard, error=str(exc))
    return UNLIMITED_CAP if soft == resource.RLIM_INFINITY else int(soft)


def open_descriptors() -> int:
    """How many descriptors this process has open now (Linux; a guess elsewhere)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return RESERVE


def plan_connections(
    *,
    limit: int,
    in_use: int,
    queues: int,
    deliveries: int,
    services: Iterable[str],
    wanted_floor: int,
    cost: int = 1,
) -> ConnectionPlan:
    """Pools within `limit - in_use - RESERVE` descriptors, `cost` descriptors a connection
    (more than 1 when the emulator runs in the same process, as in the demo).

    Unconstrained, SQS gets what every queue polling at once plus the deliveries and settles
    need (at least `wanted_floor`, `aws.max_pool_connections`), and each target service the
    deliveries.
    """
    budget = max(MIN_POOL * 2, (limit - in_use - RESERVE) // cost)
    targets = sorted(set(services) - {"sqs"})
    sqs_wanted = max(wanted_floor, queues * 2 + deliveries + 10)
    target_wanted = max(MIN_POOL, deliveries)
    per_target = 0
    if targets:
        per_target = max(MIN_POOL, min(target_wanted, budget // (2 * len(targets))))
    sqs_pool = max(MIN_POOL * 2, min(sqs_wanted, budget - per_target * len(targets)))
    slots = max(1, sqs_pool - max(1, sqs_pool // SETTLE_SHARE))
    return ConnectionPlan(limit, budget, sqs_pool, dict.fromkeys(targets, per_target), slots)
