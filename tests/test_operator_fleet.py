"""`parked replay --to target` with coordination: the command is a member of the fleet while
it runs, so it honours the breaker the daemons published and takes only its share."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest

from tests.helpers import depth
from tests.test_coordination import RealClock, Replica
from tests.test_operator_loop import Cli
from tests.test_operator_safety import _park, _tree
from worker.aws.clients import Clients
from worker.emulator import create_coordination_table, create_queue
from worker.fleet.table import CoordinationTable
from worker.ops.operator_iam import operator_policy
from worker.settings import (
    AwsSettings,
    Settings,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

TABLE = "coordination"


async def _daemon_opened_the_breaker(endpoint: str) -> None:
    """A daemon replica's coordinator, as it publishes an open breaker for the target."""
    async with AsyncExitStack() as stack:
        clients = Clients(AwsSettings(endpoint_url=endpoint), stack, pool=2)
        table = CoordinationTable(await clients.get("dynamodb"), TABLE)
        daemon = Replica("daemon", table, RealClock(), key="sqs:out")
        await daemon.fleet.heartbeat()
        daemon.trip()
        await daemon.fleet.flush()


async def _setup(aws, proxy, tmp_path) -> tuple[Cli, str, str]:
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parked = await create_queue(aws.sqs, "parked")
    out = await create_queue(aws.sqs, "out")
    await create_coordination_table(await aws.client("dynamodb"), TABLE)
    await _park(aws, parked, dlq, 5)
    tree = _tree(proxy.url)
    tree["coordination"] = {"backend": "dynamodb", "table": TABLE, "heartbeat_seconds": 0.5}
    return Cli(tmp_path, tree), parked, out


async def test_a_replay_to_target_honours_the_fleets_open_breaker(aws, proxy, tmp_path):
    cli, parked, out = await _setup(aws, proxy, tmp_path)
    await _daemon_opened_the_breaker(proxy.url)
    result = await cli("parked", "replay", "orders", "--to", "target", "--yes")
    assert result.returncode == 1, result.stderr
    assert result.stdout.count(": CircuitOpen (still parked)") == 5
    assert await depth(aws.sqs, out) == 0
    assert await depth(aws.sqs, parked) == 5
    assert not proxy.requests("sqs", "SendMessageBatch")  # nothing went to the target


async def test_a_replay_to_target_is_a_member_while_it_runs(aws, proxy, tmp_path):
    cli, parked, out = await _setup(aws, proxy, tmp_path)
    proxy.clear()
    result = await cli("parked", "replay", "orders", "--to", "target", "--yes")
    assert result.returncode == 0, result.stderr
    assert "coordination" not in result.stdout + result.stderr  # routine lines stay quiet
    assert "redrive_sources" not in result.stdout
    assert await depth(aws.sqs, out) == 5
    assert await depth(aws.sqs, parked) == 0
    beats = [b for b in proxy.requests("dynamodb", "UpdateItem") if "member#" in str(b["Key"])]
    assert beats, "the command beat as a member"
    [left] = proxy.requests("dynamodb", "DeleteItem")
    assert left["Key"]["sk"]["S"] == beats[0]["Key"]["sk"]["S"]  # and left when done
    dry = await cli("parked", "replay", "orders", "--to", "target")
    assert dry.returncode == 0
    assert len(proxy.requests("dynamodb", "DeleteItem")) == 1  # a dry run never joins


def test_the_operators_policy_includes_the_table_with_coordination():
    tree = _tree("http://127.0.0.1:1")
    tree["coordination"] = {"backend": "dynamodb", "table": TABLE}
    policy = operator_policy(Settings(**tree), "123456789012")
    [table] = [s for s in policy["Statement"] if s["Sid"] == "CoordinationTable"]
    assert table["Resource"] == ["arn:aws:dynamodb:us-east-1:123456789012:table/coordination"]
