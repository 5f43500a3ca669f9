"""Fixtures: moto's server on a free loopback port, the fault proxy in front of it, and
helpers that build the real components against them (aiobotocore over HTTP, as in production).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
import structlog
from aiobotocore.session import get_session
from prometheus_client import CollectorRegistry

from worker.aws.clients import Clients
from worker.daemon.assembly import Shared, build_poller
from worker.dlq.poller import Poller
from worker.emulator import MotoServer, create_role
from worker.emulator.proxy import FaultProxy
from worker.fleet.guards import Guards
from worker.logs import OwnHandler
from worker.metrics import Metrics
from worker.settings import Settings

# Never reach a real AWS account from a test.
for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(var, None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
)


# The longest modules (by `pytest --durations`, 20 s to 60 s a test), longest first.
LONGEST = (
    "test_operator_loop",
    "test_chaos",
    "test_fleet_process",
    "test_soak",
    "test_keeper_process",
    "test_http",
    "test_sqs_target",
    "test_iam_conformance",
    "test_kill_mid_settle",
    "test_demo",
)


def _order(item: pytest.Item) -> tuple[bool, int]:
    module = item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
    rank = LONGEST.index(module) if module in LONGEST else len(LONGEST)
    return item.get_closest_marker("slow") is None and rank == len(LONGEST), rank


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long end-to-end tests first, the longest of them first: run in parallel (`make
    test` uses pytest-xdist), they start at once on their own workers and the short ones fill
    the gaps, instead of one long test starting last and running alone. Work stealing hands
    each worker a contiguous share of the list to begin with: the tests are dealt, so every
    share begins with its part of the long ones."""
    items.sort(key=_order)
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    if workers > 1:
        items[:] = [item for share in range(workers) for item in items[share::workers]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _default_logging() -> Iterator[None]:
    """Tests that capture logs configure structlog; put the defaults back afterwards."""
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, OwnHandler)]:
        root.removeHandler(handler)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(moto_server.url, seed=11).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def emulator(moto_server: MotoServer) -> MotoServer:
    """A clean emulator for each test."""
    moto_server.reset()
    return moto_server


@pytest.fixture
def proxy(_proxy: FaultProxy, emulator: MotoServer) -> Iterator[FaultProxy]:
    """The fault proxy with no rules and zeroed counts; the worker talks through it."""
    _proxy.clear()
    _proxy.keep_journal = True
    yield _proxy
    _proxy.clear()


class Aws:
    """aiobotocore clients straight to the emulator (the test's own view of AWS)."""

    def __init__(self, url: str, stack: AsyncExitStack) -> None:
        self.url = url
        self._stack = stack
        self._session = get_session()

    async def client(self, service: str) -> Any:
        return await self._stack.enter_async_context(
            self._session.create_client(service, region_name="us-east-1", endpoint_url=self.url)
        )

    async def open(self) -> Aws:
        self.sqs = await self.client("sqs")
        self.lambda_ = await self.client("lambda")
        self.sfn = await self.client("stepfunctions")
        await create_role(await self.client("iam"))
        return self


@pytest.fixture
async def aws(emulator: MotoServer) -> AsyncIterator[Aws]:
    async with AsyncExitStack() as stack:
        yield await Aws(emulator.url, stack).open()


# Short polls for tests; always long-poll: a test sending mid-run must not wait out an idle
# interval.
TEST_RECEIVE = {
    "batch_size": 10,
    "wait_seconds": 1,
    "visibility_timeout_seconds": 30,
    "idle_max_interval_seconds": 0,
}


def make_settings(endpoint: str, queues: dict[str, Any], **sections: Any) -> Settings:
    """Settings for tests: short polls and backoffs unless a test says otherwise."""
    defaults = {
        "concurrency": 10,
        "receive": TEST_RECEIVE,
        "policy": {
            "max_attempts": 5,
            "backoff": {"initial_seconds": 1, "multiplier": 2, "max_seconds": 4, "jitter": "none"},
            "parking_queue": "parked",
        },
    }
    tree: dict[str, Any] = {
        "aws": {"endpoint_url": endpoint, "read_timeout_seconds": 10, "sdk_max_attempts": 2},
        "defaults": defaults,
        "queues": queues,
        "shutdown": {"grace_seconds": 5},
        # Off unless a test is about it (tests/test_keeper.py): a pass holds parked messages
        # for a moment, at a time of its own, under tests that count them.
        "keeper": {"enabled": False},
    }
    for key, value in sections.items():
        tree[key] = {**tree.get(key, {}), **value} if isinstance(value, dict) else value
    return Settings(**tree)


class Worker:
    """The real poller for one queue, built by the composition root's own function."""

    def __init__(self, settings: Settings, stack: AsyncExitStack) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.clients = Clients(settings.aws, stack, pool=32)
        self.shared = Shared(Guards(self.clients, self.metrics))

    async def poller(self, name: str) -> Poller:
        return await build_poller(
            name,
            self.settings.queues[name],
            self.settings,
            self.clients,
            self.metrics,
            self.shared,
        )

    def settled(self, queue: str, action: str) -> float:
        value = self.registry.get_sample_value(
            "retry_worker_messages_settled_total", {"queue": queue, "action": action}
        )
        return value or 0.0


@pytest.fixture
async def worker_stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack
