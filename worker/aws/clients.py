"""Building aiobotocore clients with every retry and pool setting explicit (aws-facts.md)."""

from __future__ import annotations

import platform
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import aiobotocore
import anyio
import botocore
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from worker import __version__
from worker.aws.trace import carry_traces
from worker.settings import LAMBDA_MAX_TIMEOUT_SECONDS, AwsSettings

COORDINATION_READ_TIMEOUT = 3.0

# The client types are untyped in aiobotocore; one alias keeps signatures honest.
Client = Any

# A fixed User-Agent: botocore otherwise rebuilds it from a dozen components on every request
# (5-7 % of the CPU of a busy queue, measured).
USER_AGENT = (
    f"retry-worker/{__version__} aiobotocore/{aiobotocore.__version__} "
    f"botocore/{botocore.__version__} Python/{platform.python_version()}"
)


def client_config(
    aws: AwsSettings,
    *,
    pool: int,
    read_timeout: float | None = None,
    total_attempts: int | None = None,
) -> AioConfig:
    return AioConfig(
        user_agent=USER_AGENT,
        # Our requests are built by our own code (and tested); the service validates them
        # anyway. Client-side validation was 13 % of the CPU of an API call, measured.
        parameter_validation=False,
        region_name=aws.region,
        max_pool_connections=pool,
        connect_timeout=aws.connect_timeout_seconds,
        read_timeout=read_timeout or aws.read_timeout_seconds,
        retries={
            "mode": "standard",
            "total_max_attempts": total_attempts or aws.sdk_max_attempts,
        },
    )


class Clients:
    """One client per service, opened on demand and closed with the exit stack. `pool` is the
    connection pool of every client, or a function of the service (the descriptor budget)."""

    def __init__(
        self,
        aws: AwsSettings,
        stack: AsyncExitStack,
        *,
        pool: int | Callable[[str], int],
        on_request: Callable[[str, str], None] | None = None,
    ) -> None:
        self._aws = aws
        self._stack = stack
        self._on_request = on_request  # (service, operation) of every HTTP request, retries too
        self._pool: Callable[[str], int] = pool if callable(pool) else (lambda _: pool)
        self._session = get_session()
        self._clients: dict[str, Client] = {}
        self._lock = anyio.Lock()

    async def get(self, service: str) -> Client:
        async with self._lock:  # queues start concurrently: build each client once
            return await self._get(service)

    async def _get(self, service: str) -> Client:
        if service not in self._clients:
            pool = self._pool(service)
            config = client_config(self._aws, pool=pool)
            if service == "lambda":
                # A synchronous invoke must outlive the function (at most 900 s), and botocore
                # must never re-send an Invoke: a retried invoke runs the function twice. Our
                # own policy retries through SQS instead.
                config = client_config(
                    self._aws,
                    pool=pool,
                    read_timeout=LAMBDA_MAX_TIMEOUT_SECONDS + 10,
                    total_attempts=1,
                )
            if service == "dynamodb":
                # Coordination: a slow table must not hold deliveries (loop counts) or the
                # heartbeat; one retry, short reads, then the replica degrades on its own.
                config = client_config(
                    self._aws,
                    pool=pool,
                    read_timeout=min(self._aws.read_timeout_seconds, COORDINATION_READ_TIMEOUT),
                    total_attempts=min(self._aws.sdk_max_attempts, 2),
                )
            creator = self._session.create_client(
                service,
                region_name=self._aws.region,
                endpoint_url=self._aws.endpoint_for(service),
                config=config,
            )
            client = await self._stack.enter_async_context(creator)
            carry_traces(client, service)
            if self._on_request is not None:
                client.meta.events.register("before-send", self._counted)
            self._clients[service] = client
        return self._clients[service]

    def _counted(self, event_name: str, **kwargs: Any) -> None:
        """`before-send.<service>.<operation>`: one billed request (botocore's retries too)."""
        assert self._on_request is not None
        _, service, operation = event_name.split(".", 2)
        self._on_request(service, operation)
