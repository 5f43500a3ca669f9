"""The AWS edge shared by every wing: clients (retry mode, pools, timeouts, request counting),
the descriptor budget that sizes their pools, SQS batch calls that read every `Failed` entry,
what a DLQ tells about itself (redrive sources, retention, depth, the pause tag), and the
classification of AWS errors into the core's vocabulary.

May import: `worker.core`, `worker.settings`, `worker.metrics`.
"""
