"""The operator side (SPEC.md, Operator commands): see what was parked and why, replay or
discard it safely, pause a queue for every replica; and the IAM policies.

- `filters.py`       which parked messages a command acts on (pure)
- `records.py`       a parked message as read from its queue, and the JSONL backup/export format
- `scan.py`          reading a queue: every message once, receives in parallel, held invisible
- `kept.py`          what a read did not act on, spilled to a file and released at the end
- `holds.py`         how long a receive holds its messages: past the read's projected end
- `reading.py`       the read-only commands (status, summary, list, export) and the selection
- `moves.py`         the commands that change a queue: replay and purge, chunks in parallel
- `senders.py`       where a replay sends: the DLQ, or the target through the daemon's guard
- `restore.py`       a backup or export sent back, in lanes that keep a FIFO group in order
- `progress.py`      a progress bar on a terminal, plain lines otherwise
- `context.py`       a logical queue name resolved through the daemon's own configuration
- `commands.py`      the commands themselves; `worker/cli.py` only parses arguments
- `iam.py`           the daemon's least-privilege IAM policy; `operator_iam.py`: the operator's

Everything that talks to AWS reuses the daemon's pieces: the SQS adapter (batch calls that read
every `Failed` entry, byte-aware batching), the target adapters and their one delivery step
through the guard (bucket + breaker), the parking-format reader, the fleet's coordinator.

May import: `worker.decisions`, `worker.fleet`, `worker.targets`, `worker.aws`, `worker.core`,
`worker.settings`, `worker.metrics` and the public `worker.hooks`. Never the queue loop or
the daemon.
"""
