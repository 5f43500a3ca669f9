"""Coordination between the replicas of one deployment (SPEC.md, Coordination): one budget
and one breaker per target for the whole fleet, through a DynamoDB table.

- `coordinator.py` heartbeats, membership, shares, degraded and recovered
- `breakers.py`    published breakers, adoption in generation order, the probe lease
- `loops.py`       loop counts every replica shares (`SharedLoops`, falling back to the local count)
- `table.py`       the table's item layout: the only code that knows it
- `guards.py`      every target with its guard and the fleet's share: the one place both the
                   daemon and `parked replay --to target` build a target

May import: `worker.targets` (the guard), `worker.aws`, `worker.core`, `worker.settings`,
`worker.metrics`. Never the queue loop, the daemon or the operator commands.
"""
