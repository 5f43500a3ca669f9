"""retry-worker: self-healing retries for AWS serverless dead-letter queues."""

__version__ = "0.1.0"
