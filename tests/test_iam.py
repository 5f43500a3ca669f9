"""iam-policy: exactly the statements a configuration needs (golden file), nothing more."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import yaml

from worker.ops.iam import PolicyError, build_policy, partition
from worker.settings import Settings

GOLDEN = Path(__file__).parent / "golden"


def settings_from(path: Path) -> Settings:
    return Settings(**yaml.safe_load(path.read_text()))


def test_policy_for_every_target_kind_matches_the_golden_file():
    policy = build_policy(settings_from(GOLDEN / "iam-config.yaml"), "210987654321")
    assert policy == json.loads((GOLDEN / "iam-policy.json").read_text())


def test_command_prints_the_golden_policy():
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRY_WORKER_")}
    env["RETRY_WORKER_CONFIG_DIR"] = str(GOLDEN / "none")
    config = str(GOLDEN / "iam-config.yaml")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "iam-policy",
            "--config",
            config,
            "--account-id",
            "210987654321",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads((GOLDEN / "iam-policy.json").read_text())
    # Issue 28, item 6: the wildcard a `source: true` queue gets without --resolve-sources
    # is said, with the way out.
    assert "without --resolve-sources this policy lets them send to every queue" in result.stderr


def test_only_documented_statements_use_wildcards():
    policy = build_policy(settings_from(GOLDEN / "iam-config.yaml"), "210987654321")
    wild = {s["Sid"] for s in policy["Statement"] if any("*" in r for r in s["Resource"])}
    # redrive sources are found at run time; executions are named per message
    assert wild == {
        "ReadRedriveSources",
        "SendToSourceQueues",
        "WatchExecutions",
        "RedriveExecutions",
    }
    assert all(r != "*" for s in policy["Statement"] for r in s["Resource"])


def test_no_step_functions_no_states_actions():
    tree = yaml.safe_load((GOLDEN / "iam-config.yaml").read_text())
    del tree["queues"]["fulfil"]
    policy = build_policy(Settings(**tree), "210987654321")
    actions = [a for s in policy["Statement"] for a in s["Action"]]
    assert not [a for a in actions if a.startswith("states:")]
    assert "kms:Decrypt" in actions


def test_coordination_grants_the_tables_item_operations_only():
    tree = yaml.safe_load((GOLDEN / "iam-config.yaml").read_text())
    policy = build_policy(Settings(**tree), "210987654321")
    [table] = [s for s in policy["Statement"] if s["Sid"] == "CoordinationTable"]
    assert table["Action"] == [
        "dynamodb:DeleteItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
    ]
    assert table["Resource"] == [
        "arn:aws:dynamodb:eu-west-1:210987654321:table/retry-worker-coordination"
    ]
    del tree["coordination"]
    actions = [
        a for s in build_policy(Settings(**tree), "210987654321")["Statement"] for a in s["Action"]
    ]
    assert not [a for a in actions if a.startswith("dynamodb:")]


def test_names_need_an_account_id():
    with pytest.raises(PolicyError, match="pass --account-id"):
        build_policy(settings_from(GOLDEN / "iam-config.yaml"))


@pytest.mark.parametrize(
    ("region", "expected"),
    [("us-east-1", "aws"), ("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")],
)
def test_partition_follows_the_region(region, expected):
    assert partition(region) == expected


def test_queue_url_region_and_account_win_over_the_defaults():
    tree = {
        "aws": {"region": "cn-north-1"},
        "queues": {
            "q": {
                "url": "https://sqs.cn-north-1.amazonaws.com.cn/999988887777/dlq",
                "target": {
                    "kind": "sqs",
                    "queue": "https://sqs.cn-north-1.amazonaws.com.cn/999988887777/out",
                },
                "policy": {
                    "parking_queue": "https://sqs.cn-north-1.amazonaws.com.cn/999988887777/parked"
                },
            }
        },
    }
    policy = build_policy(Settings(**tree))
    resources = {r for s in policy["Statement"] for r in s["Resource"]}
    assert "arn:aws-cn:sqs:cn-north-1:999988887777:dlq" in resources
    assert "arn:aws-cn:sqs:cn-north-1:999988887777:out" in resources


@pytest.mark.parametrize("mode", ["explicit", "auto", "discovery"])
def test_documented_mode_policies_are_what_the_command_prints(mode):
    docs = Path(__file__).parent.parent / "docs"
    settings = settings_from(docs / "modes" / f"{mode}.yaml")
    generated = build_policy(settings, "123456789012")
    assert generated == json.loads((docs / "modes" / f"{mode}.policy.json").read_text())
    page = (docs / "modes.md").read_text()
    assert json.dumps(generated, indent=2) in page


@pytest.mark.anyio
async def test_resolved_sources_replace_the_redrive_wildcards(aws, tmp_path):
    from worker.emulator import create_source_with_dlq

    await create_source_with_dlq(aws.sqs, "billing", "billing-dlq", max_receive_count=3)
    config = {
        "aws": {"endpoint_url": aws.url},
        "defaults": {"policy": {"parking_queue": "parked"}},
        "queues": {"billing": {"name": "billing-dlq", "target": {"kind": "sqs", "source": True}}},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRY_WORKER_")}
    env["RETRY_WORKER_CONFIG_DIR"] = str(tmp_path / "none")
    command = [sys.executable, "-m", "worker", "iam-policy", "--config", str(path)]
    command += ["--account-id", "123456789012", "--resolve-sources"]
    run = functools.partial(
        subprocess.run, command, capture_output=True, text=True, env=env, timeout=60, check=False
    )
    result = await anyio.to_thread.run_sync(run)
    assert result.returncode == 0, result.stderr
    statements = {s["Sid"]: s for s in json.loads(result.stdout)["Statement"]}
    source_arn = "arn:aws:sqs:us-east-1:123456789012:billing"
    assert statements["ReadRedriveSources"]["Resource"] == [source_arn]
    assert statements["SendToSourceQueues"]["Resource"] == [source_arn]
    assert not [r for s in statements.values() for r in s["Resource"] if "*" in r]


def test_a_lambda_hook_adds_its_invoke_and_nothing_else():
    tree = yaml.safe_load((GOLDEN / "iam-config.yaml").read_text())
    plain = build_policy(Settings(**tree), "210987654321")
    name = next(iter(tree["queues"]))
    tree["queues"][name]["hook"] = {"lambda": "decide-orders"}
    hooked = build_policy(Settings(**tree), "210987654321")
    added = [s for s in hooked["Statement"] if s not in plain["Statement"]]
    assert added == [
        {
            "Sid": "InvokeHooks",
            "Effect": "Allow",
            "Action": ["lambda:InvokeFunction"],
            "Resource": ["arn:aws:lambda:eu-west-1:210987654321:function:decide-orders"],
        }
    ]
    assert len(hooked["Statement"]) == len(plain["Statement"]) + 1


def test_notification_sinks_add_exactly_their_publish_and_put_events():
    tree = yaml.safe_load((GOLDEN / "iam-config.yaml").read_text())
    plain = build_policy(Settings(**tree), "210987654321")
    topic = "arn:aws:sns:eu-west-1:210987654321:retry-alerts"
    tree["notify"] = {
        "sinks": [
            {"sns": {"topic_arn": topic}},
            {"eventbridge": {"bus": "ops"}},
            {"webhook": {"url_file": "/secrets/slack-url", "format": "slack"}},
        ]
    }
    notified = build_policy(Settings(**tree), "210987654321")
    added = [s for s in notified["Statement"] if s not in plain["Statement"]]
    assert sorted((s["Action"], s["Resource"]) for s in added) == [
        (["events:PutEvents"], ["arn:aws:events:eu-west-1:210987654321:event-bus/ops"]),
        (["sns:Publish"], [topic]),
    ]
    assert {s["Sid"] for s in added} <= {"SendDigests", "SendDigests2"}


def test_redrives_are_granted_on_the_machines_executions_only():
    """Waiting with `redrive` (the default) adds RedriveExecution on the machine's executions;
    `restart` does not; `kind: auto` with a machine in `allow` redrives what a status-change
    event names: RedriveExecution and DescribeExecution on the allowed machines' executions."""
    machine = "arn:aws:states:eu-west-1:210987654321:stateMachine:fulfil"

    def statements(target: dict) -> dict[str, tuple[list[str], list[str]]]:
        tree = {
            "defaults": {"policy": {"parking_queue": "parked"}},
            "queues": {"q": {"name": "q-dlq", "target": target}},
        }
        policy = build_policy(Settings(**tree), "210987654321")
        return {s["Sid"]: (s["Action"], s["Resource"]) for s in policy["Statement"]}

    waited = {"kind": "stepfunctions", "state_machine_arn": machine, "wait_for_completion": True}
    executions = ["arn:aws:states:eu-west-1:210987654321:execution:fulfil:*"]
    assert statements(waited)["RedriveExecutions"] == (["states:RedriveExecution"], executions)
    assert "RedriveExecutions" not in statements({**waited, "on_failed_execution": "restart"})
    assert "RedriveExecutions" not in statements({**waited, "wait_for_completion": False})
    auto = statements({"kind": "auto", "allow": [machine.replace("fulfil", "orders-*")]})
    assert auto["AutoRedrives"] == (
        ["states:DescribeExecution", "states:RedriveExecution"],
        ["arn:aws:states:eu-west-1:210987654321:execution:orders-*:*"],
    )
    assert auto["AutoTargets"][0] == ["states:StartExecution"]
