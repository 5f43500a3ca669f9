"""The coordination table as deploy/ creates it: the CloudFormation snippet and the CLI script
both make a table the daemon can use (against the emulator), and production's Helm values
turn coordination on."""

from __future__ import annotations

import os
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest
import yaml

from tests.test_deploy import render
from worker.aws.clients import Clients
from worker.fleet.table import CoordinationTable
from worker.settings import AwsSettings

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "dynamodb"
KEYS = [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]

# A stand-in for the AWS CLI: runs the `aws dynamodb ...` commands of the script through
# botocore against the emulator (JSON arguments, as the script passes them).
FAKE_AWS = """#!{python}
import json, sys, botocore.session
args = sys.argv[1:]
service, command, rest = args[0], args[1], args[2:]
params = {{}}
for flag, value in zip(rest[::2], rest[1::2]):
    name = "".join(p.capitalize() for p in flag[2:].split("-"))
    name = {{"SseSpecification": "SSESpecification"}}.get(name, name)
    params[name] = json.loads(value) if value[:1] in "[{{" else value
client = botocore.session.get_session().create_client(
    service, region_name="us-east-1", endpoint_url="{endpoint}"
)
if command == "wait":
    assert client.describe_table(TableName=rest[2])["Table"]["TableStatus"] == "ACTIVE"
else:
    getattr(client, command.replace("-", "_"))(**params)
"""


async def _usable(endpoint: str, table: str) -> None:
    """The daemon's own adapter can beat and read in it."""
    async with AsyncExitStack() as stack:
        clients = Clients(AwsSettings(endpoint_url=endpoint), stack, pool=2)
        adapter = CoordinationTable(await clients.get("dynamodb"), table)
        await adapter.beat("probe", 10)
        assert (await adapter.read()).counters == {"probe": 1}


async def _described(aws, table: str) -> tuple[list, dict]:
    client = await aws.client("dynamodb")
    described = (await client.describe_table(TableName=table))["Table"]
    ttl = (await client.describe_time_to_live(TableName=table))["TimeToLiveDescription"]
    return described["KeySchema"], ttl


async def test_the_cloudformation_table_is_the_one_the_daemon_uses(aws, emulator):
    template = yaml.safe_load((DEPLOY / "table.yaml").read_text())
    props = template["Resources"]["CoordinationTable"]["Properties"]
    name = template["Parameters"]["TableName"]["Default"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    client = await aws.client("dynamodb")
    await client.create_table(
        TableName=name,
        BillingMode=props["BillingMode"],
        AttributeDefinitions=props["AttributeDefinitions"],
        KeySchema=props["KeySchema"],
    )
    await client.update_time_to_live(
        TableName=name, TimeToLiveSpecification=props["TimeToLiveSpecification"]
    )
    keys, ttl = await _described(aws, name)
    assert keys == KEYS
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")
    await _usable(emulator.url, name)


async def test_the_cli_script_makes_the_same_table(aws, emulator, tmp_path):
    fake = tmp_path / "aws"
    fake.write_text(FAKE_AWS.format(python=sys.executable, endpoint=emulator.url))
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    with anyio.fail_after(60):
        result = await anyio.run_process(
            ["/bin/sh", str(DEPLOY / "create-table.sh"), "rw-cli"], env=env, check=False
        )
    assert result.returncode == 0, result.stderr.decode()
    keys, ttl = await _described(aws, "rw-cli")
    assert keys == KEYS
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")
    await _usable(emulator.url, "rw-cli")


@pytest.mark.tools  # renders the chart with helm
def test_production_values_turn_coordination_on():
    [configmap] = [
        d for d in render("production") if d["kind"] == "ConfigMap" and "config.yaml" in d["data"]
    ]
    config = yaml.safe_load(configmap["data"]["config.yaml"])
    assert config["coordination"] == {
        "backend": "dynamodb",
        "table": "retry-worker-coordination",
        "members_when_unknown": 12,
    }
