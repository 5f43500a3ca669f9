"""The operator side (SPEC.md, Operator commands): see what was parked and why, replay or
discard it safely, pause a queue for every replica.

- `filters.py`   which parked messages a command acts on (pure)
- `records.py`   a parked message as read from its queue, and the JSONL backup/export format
- `scan.py`      reading a queue: every message once, held invisible, released at the end
- `progress.py`  a progress bar on a terminal, plain lines otherwise
- `context.py`   a logical queue name resolved through the daemon's own configuration
- `commands.py`  the commands themselves; `worker/cli.py` only parses arguments
- `policy.py`    the operator's least-privilege IAM policy

Everything that talks to AWS reuses the daemon's pieces: the SQS adapter (batch calls that read
every `Failed` entry, byte-aware batching), the target adapters, the guard (bucket + breaker)
and the parking-format reader.
"""
