"""The keeper (SPEC.md, Keeping parked messages): a parking queue keeps a message only for its
`MessageRetentionPeriod`; the keeper re-parks each message before that ends, so parked stays
parked until a person acts.

- `keeper.py` one parking queue's checks: when a pass is needed, the fleet's lease, metrics
- `sweep.py`  one pass: read everything with a short hold, re-park what is due, release
- `receipts.py` what a pass releases at its end, spilled to a file
- `keepers.py` one keeper per distinct parking queue of the process

May import: `worker.aws`, `worker.core`, `worker.settings`, `worker.metrics`. The daemon
starts one keeper per distinct parking queue.
"""
