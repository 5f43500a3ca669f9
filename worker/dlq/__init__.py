"""The queue loop: one DLQ, served from receive to settle.

- `poller.py`    receive (room and turns permitting) and start each batch
- `batch.py`     one received batch: lease heartbeat, pipeline, shielded settle, crash/abort
- `pipeline.py`  per message: attempt → gate → loop check → deliver through the guard → decide
- `settle.py`    decisions into SQS batch calls (park first, delete only what was accepted)
- `room.py`  a queue's concurrency tokens and its turn to poll (the descriptor budget)
- `watch.py`    between receives: idle checks, depth gauges, the pause tag
- `pause.py`     the pause tag as the loop reads it (at most every 30 s)

May import: `worker.targets`, `worker.aws`, `worker.core`, `worker.settings`,
`worker.metrics`. Never the fleet (it sees coordination only through the `Loops` protocol in
`worker.core.loopguard` and the guard's `Fleet` protocol), the daemon or the operator commands.
"""
