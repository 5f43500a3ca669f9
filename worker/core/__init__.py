"""The pure core: what a message is, what its failure means and what to do about it.

Envelope and failure shapes, the error vocabulary, outcomes and settlements, the retry policy
(attempts, backoff, visibility arithmetic), size limits, the parking format, the token bucket,
the circuit breaker, the loop guard, FIFO rounds and the wait ledger, the idle schedule and
fleet membership. No I/O, no AWS code, no clock or random source of its own (they are parameters).

May import: `worker.settings`, the public `worker.hooks` (its `Park` is the outcome's too) and
itself; nothing else of `worker`.
"""
