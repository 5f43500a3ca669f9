"""Building aiobotocore clients with every retry and pool setting explicit (aws-facts.md), for
the deployment's own account and region and for each place (account, region) a queue lives in
(`accounts:`, SPEC.md "Many accounts and regions")."""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import aiobotocore
import anyio
import botocore
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from worker import __version__
from worker.aws.assume import Assumed
from worker.aws.trace import carry_traces
from worker.settings import LAMBDA_MAX_TIMEOUT_SECONDS, AwsSettings

if TYPE_CHECKING:
    from worker.settings import AccountSettings, QueueSettings

log = structlog.get_logger("worker.aws.clients")
OPERATOR = "retry-worker-operator"  # the session name of an operator's command or console
# (account, region, up, why): told when a member account's role is assumed or fails to be
OnAccount = Callable[[str, str, bool, str], None]

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
    connection pool of every client, or a function of the service (the descriptor budget).

    These are the deployment's own (its credentials, `aws.region`); `at(account, region)` and
    `of(queue)` give another place's, built once: a member account's on its assumed role."""

    def __init__(
        self,
        aws: AwsSettings,
        stack: AsyncExitStack,
        *,
        pool: int | Callable[[str], int],
        on_request: Callable[[str, str], None] | None = None,
        accounts: Sequence[AccountSettings] = (),
        on_account: OnAccount | None = None,
        who: str = "retry-worker",
    ) -> None:
        self._aws = aws
        self._stack = stack
        self._on_request = on_request  # (service, operation) of every HTTP request, retries too
        self._pool: Callable[[str], int] = pool if callable(pool) else (lambda _: pool)
        self._session = get_session()
        self._clients: dict[str, Client] = {}
        self._lock = anyio.Lock()
        self.account: str | None = None  # None: the deployment's own credentials
        self.region = aws.region
        self._root = self
        self._accounts = {a.id: a for a in accounts}
        self._on_account = on_account
        self._who = who  # the session name's start: who acted, in a member's CloudTrail
        self._places: dict[tuple[str | None, str], Clients] = {}
        self.assumed: dict[tuple[str, str], Assumed] = {}  # the member places, for health

    def at(self, account: str | None, region: str | None = None) -> Clients:
        """The clients of `account` (None: the deployment's own) in `region` (None: this
        deployment's), built once per place."""
        root = self._root
        region = region or root.region
        if account is None and region == root.region:
            return root
        if (account, region) not in root._places:
            root._places[account, region] = root._place(account, region)
        return root._places[account, region]

    @property
    def where(self) -> str:
        """`<account>/<region>` (`own/<region>`) of another place than the deployment's own
        account and region; empty for the deployment's own."""
        return "" if self._root is self else f"{self.account or 'own'}/{self.region}"

    def of(self, queue: QueueSettings) -> Clients:
        """Where a queue lives: its DLQ, parking queue and targets resolve there."""
        return self.at(queue.account, queue.region)

    def _place(self, account: str | None, region: str) -> Clients:
        # a per-service endpoint (a VPC endpoint) is this region's: another region has its own
        where = (
            {"region": region} if region == self.region else {"region": region, "endpoint_urls": {}}
        )
        place = Clients(
            self._aws.model_copy(update=where),
            self._stack,
            pool=self._pool,
            on_request=self._on_request,
        )
        place._root, place.account = self, account
        if account is not None:
            member = self._accounts.get(account)
            if member is None:
                raise ValueError(f"account {account} is not among `accounts`")
            assumed = Assumed(
                self._session,
                member.role_arn,
                region,
                external_id=member.external_id,
                duration_seconds=member.session_seconds,
                endpoint_url=place._aws.endpoint_for("sts"),
                on_state=lambda up, why: self._account_state(account, region, up, why),
                config=client_config(self._aws, pool=2, read_timeout=10, total_attempts=2),
                who=self._who,
            )
            place._session = assumed.session
            self.assumed[account, region] = assumed
        return place

    def _account_state(self, account: str, region: str, up: bool, why: str) -> None:
        """Said once per change, never per call."""
        if up:
            log.info("account_available", account=account, region=region)
        else:
            log.warning("account_unavailable", account=account, region=region, error=why)
        if self._on_account is not None:
            self._on_account(account, region, up, why)

    def account_notes(self) -> list[str]:
        """For `/readyz?verbose`: the member places whose role cannot be assumed now."""
        return [
            f"account {account} in {region}: cannot assume {a.role_arn} ({a.why})"
            for (account, region), a in sorted(self._root.assumed.items())
            if a.up is False
        ]

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
