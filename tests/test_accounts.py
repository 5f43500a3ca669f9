"""Many accounts and regions in one deployment (SPEC.md): every message is redriven inside its
own account and region, same-named queues elsewhere are untouched, discovery runs in each
listed account, an assumed role is refreshed without a restart, and an account whose role
cannot be assumed degrades alone. moto maps an assumed role's credentials to its account."""

from __future__ import annotations

import contextlib
import functools
import json
import re
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
import structlog
from aiobotocore.session import get_session
from prometheus_client import CollectorRegistry

from tests.conftest import make_settings
from tests.helpers import depth, drain, wait_for
from worker.aws import assume
from worker.aws.assume import Assumed
from worker.daemon.app import serve
from worker.emulator import create_queue
from worker.emulator.proxy import Rule

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

A, B = "111111111111", "222222222222"
REGIONS = ("us-east-1", "eu-west-1")


def role(account: str) -> str:
    return f"arn:aws:iam::{account}:role/retry-worker"


LOOPBACK = {"host": "127.0.0.1", "port": 0}  # the daemon's health server: a free loopback port
ACCOUNTS = [{"id": a, "role_arn": role(a), "regions": list(REGIONS)} for a in (A, B)]


async def member(aws: Any, stack: AsyncExitStack, account: str, region: str, service: str) -> Any:
    """A client acting in `account` and `region`, as the member role does."""
    sts = await aws.client("sts")
    given = (await sts.assume_role(RoleArn=role(account), RoleSessionName="test"))["Credentials"]
    return await stack.enter_async_context(
        get_session().create_client(
            service,
            region_name=region,
            endpoint_url=aws.url,
            aws_access_key_id=given["AccessKeyId"],
            aws_secret_access_key=given["SecretAccessKey"],
            aws_session_token=given["SessionToken"],
        )
    )


def _queue(account: str | None, region: str) -> dict[str, Any]:
    where = {"account": account} if account else {}
    return {
        **where,
        "region": region,
        "name": "orders-dlq",
        "target": {"kind": "sqs", "queue": "out"},  # a name: resolved where the queue lives
    }


async def _daemon(settings: Any, registry: CollectorRegistry, task_status: Any) -> None:
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        runtime = await tg.start(functools.partial(serve, settings, stop, registry=registry))
        task_status.started((runtime, stop))


@pytest.mark.slow  # a daemon (or CLI processes): make test, not make unit
async def test_each_message_is_redriven_in_its_own_account_and_region(aws, proxy):
    async with AsyncExitStack() as stack:
        places = {}
        for account in (A, B):
            for region in REGIONS:
                sqs = await member(aws, stack, account, region, "sqs")
                dlq = await create_queue(sqs, "orders-dlq")
                await create_queue(sqs, "parked")
                out = await create_queue(sqs, "out")
                body = json.dumps({"from": f"{account}/{region}"})
                await sqs.send_message(QueueUrl=dlq, MessageBody=body)
                places[account, region] = (sqs, dlq, out, body)
        # the deployment's own account has the same names: never touched
        home_dlq = await create_queue(aws.sqs, "orders-dlq")
        await create_queue(aws.sqs, "parked")
        home_out = await create_queue(aws.sqs, "out")
        await aws.sqs.send_message(QueueUrl=home_dlq, MessageBody='{"from": "home"}')
        queues = {
            f"{'a' if account == A else 'b'}-{region}": _queue(account, region)
            for account, region in places
        }
        settings = make_settings(proxy.url, queues, accounts=ACCOUNTS, http=LOOPBACK)
        registry = CollectorRegistry()
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            runtime = await tg.start(functools.partial(serve, settings, stop, registry=registry))

            async def drained() -> bool:
                return all([await depth(s, d) == 0 for s, d, _, _ in places.values()])

            await wait_for(drained, timeout=60)
            assert not runtime.health.notes()
            # four parking queues named `parked`: one each, told apart by the keeper's metrics
            labels = {queue.label for queue in runtime.shared.parking.values()}
            assert labels == {f"{account}/{region}/parked" for account, region in places}
            stop.set()

        for (account, region), (sqs, _, out, body) in places.items():
            [copy] = await drain(sqs, out)
            assert copy["Body"] == body, (account, region)
            up = registry.get_sample_value(
                "retry_worker_account_up", {"account": account, "region": region}
            )
            assert up == 1
        assert await depth(aws.sqs, home_dlq) == 1
        assert await depth(aws.sqs, home_out) == 0
        # one name in four places is four breakers, told apart in the metrics as in the keys
        for account, region in places:
            labels = {"target": f"{account}/{region}/out"}
            assert registry.get_sample_value("retry_worker_circuit_state", labels) == 0

        # every AssumeRole named its session, and went to the regional endpoint's scope
        assumed = proxy.requests("sts", "AssumeRole")
        assert {r["RoleArn"] for r in assumed} >= {role(A), role(B)}
        assert all(r["RoleSessionName"].startswith("retry-worker-") for r in assumed)


@pytest.mark.slow  # a daemon (or CLI processes): make test, not make unit
async def test_an_account_whose_role_cannot_be_assumed_degrades_alone(aws, proxy, monkeypatch):
    monkeypatch.setattr(assume, "RETRY_SECONDS", 0.5)
    async with AsyncExitStack() as stack:
        urls = {}
        for account in (A, B):
            sqs = await member(aws, stack, account, "us-east-1", "sqs")
            dlq = await create_queue(sqs, "orders-dlq")
            await create_queue(sqs, "parked")
            await create_queue(sqs, "out")
            await sqs.send_message(QueueUrl=dlq, MessageBody="{}")
            urls[account] = (sqs, dlq)
        queues = {"a": _queue(A, "us-east-1"), "b": _queue(B, "us-east-1")}
        settings = make_settings(proxy.url, queues, accounts=ACCOUNTS, http=LOOPBACK)
        denied = proxy.add(
            Rule("sts", "AssumeRole", "error", status=403, code="AccessDenied", body=B)
        )
        registry = CollectorRegistry()
        stop = anyio.Event()

        def up(account: str) -> float | None:
            labels = {"account": account, "region": "us-east-1"}
            return registry.get_sample_value("retry_worker_account_up", labels)

        with structlog.testing.capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                runtime = await tg.start(
                    functools.partial(serve, settings, stop, registry=registry)
                )
                await wait_for(lambda: _empty(*urls[A]), timeout=30)  # A drains meanwhile
                await wait_for(lambda: denied.applied >= 2, timeout=30)  # B tried, and again
                notes = runtime.health.notes()
                assert any(f"account {B} in us-east-1: cannot assume" in n for n in notes)
                assert (up(A), up(B)) == (1, 0)
                assert await depth(*urls[B]) == 1  # waits in its DLQ, nothing lost
                proxy.remove(denied)  # the role's trust is mended: B recovers by itself
                await wait_for(lambda: _empty(*urls[B]), timeout=60)
                assert up(B) == 1
                assert not any("cannot assume" in n for n in runtime.health.notes())
                stop.set()
    said = [e for e in logs if e["event"] == "account_unavailable"]
    # said once, whatever the tries (the proxy's refusal is not STS's XML: its code varies)
    assert [(e["account"], e["region"]) for e in said] == [(B, "us-east-1")]
    assert said[0]["error"]


async def _empty(sqs: Any, url: str) -> bool:
    return await depth(sqs, url) == 0


async def test_an_assumed_role_is_refreshed_before_it_expires(aws, proxy):
    async with AsyncExitStack() as stack:
        owner = await member(aws, stack, A, "eu-west-1", "sqs")
        await create_queue(owner, "orders-dlq")
        states = []
        assumed = Assumed(
            get_session(),
            role(A),
            "eu-west-1",
            duration_seconds=900,
            refresh_before_seconds=899,  # due a second after each assume
            endpoint_url=proxy.url,
            on_state=lambda up, why: states.append(up),
        )
        sqs = await stack.enter_async_context(
            assumed.session.create_client("sqs", region_name="eu-west-1", endpoint_url=proxy.url)
        )
        first = await sqs.list_queues()
        credentials = assumed.session._credentials
        await wait_for(lambda: credentials.refresh_needed(899), timeout=5)
        second = await sqs.list_queues()

    assert first["QueueUrls"] == second["QueueUrls"]
    assert f"/{A}/orders-dlq" in first["QueueUrls"][0]
    assert proxy.count("sts", "AssumeRole") == 2
    keys = {who for _, who in proxy.callers("sqs", "ListQueues")}
    assert len(keys) == 2  # the second call signed with the refreshed credentials
    assert states == [True]  # said once, not per refresh


@pytest.mark.slow  # a daemon (or CLI processes): make test, not make unit
async def test_discovery_runs_in_each_listed_account_and_region(aws, proxy):
    async with AsyncExitStack() as stack:
        for account, region in ((A, "eu-west-1"), (B, "us-east-1")):
            sqs = await member(aws, stack, account, region, "sqs")
            await create_queue(sqs, "retry-orders")
            await create_queue(sqs, "parked")
        await create_queue(aws.sqs, "retry-home")
        await create_queue(aws.sqs, "parked")
        # configured here under a name A also has: A's is another queue, discovered all the same
        await create_queue(aws.sqs, "retry-orders")
        discovery = {
            "prefix": "retry-",
            "refresh_seconds": 1,
            "accounts": [A],  # B is served by its configured queues only (none here)
            "defaults": {"target": {"kind": "auto", "allow": ["arn:aws:sqs:*:*:*"]}},
        }
        configured = {"orders": {"name": "retry-orders", "target": {"kind": "sqs", "source": True}}}
        settings = make_settings(
            proxy.url, configured, accounts=ACCOUNTS, discovery=discovery, http=LOOPBACK
        )
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            runtime = await tg.start(functools.partial(serve, settings, stop))
            wanted = {"orders", "retry-home", f"{A}/eu-west-1/retry-orders"}
            await wait_for(lambda: wanted <= set(runtime.health.pollers), timeout=30)
            served = set(runtime.health.queues)
            url = runtime.health.pollers[f"{A}/eu-west-1/retry-orders"].dlq.url
            stop.set()
    assert served == wanted  # nothing of B's, nothing of A's other region (none there)
    assert f"/{A}/retry-orders" in url


def _two_account_settings() -> Any:
    from worker.settings import Settings

    return Settings(
        aws={"region": "us-east-1"},
        accounts=ACCOUNTS,
        coordination={"backend": "dynamodb", "table": "rw-coordination"},
        defaults={"policy": {"parking_queue": "parked"}},
        queues={
            "home": {"name": "home-dlq", "target": {"kind": "lambda", "function": "home-fn"}},
            "a-eu": {
                "account": A,
                "region": "eu-west-1",
                "name": "orders-dlq",
                "target": {"kind": "lambda", "function": "orders-fn"},
            },
            "b-us": {
                "account": B,
                "name": "billing-dlq",
                "target": {"kind": "sqs", "queue": "billing-out"},
            },
        },
    )


def test_each_role_gets_exactly_what_lives_in_its_account():
    from worker.ops.iam import build_policy

    settings = _two_account_settings()

    def resources(policy: dict[str, Any]) -> set[str]:
        return {r for s in policy["Statement"] for r in s["Resource"]}

    deployment = build_policy(settings, "123456789012")
    assume = [s for s in deployment["Statement"] if s["Sid"] == "AssumeMemberRoles"]
    assert assume == [
        {
            "Sid": "AssumeMemberRoles",
            "Effect": "Allow",
            "Action": ["sts:AssumeRole"],
            "Resource": [role(A), role(B)],
        }
    ]
    assert not any(A in r or B in r for r in resources(deployment) - {role(A), role(B)})
    assert "arn:aws:dynamodb:us-east-1:123456789012:table/rw-coordination" in resources(deployment)

    member_a = build_policy(settings, member=A)
    assert resources(member_a) >= {
        f"arn:aws:sqs:eu-west-1:{A}:orders-dlq",
        f"arn:aws:sqs:eu-west-1:{A}:parked",
        f"arn:aws:lambda:eu-west-1:{A}:function:orders-fn",
    }
    assert all(f":{A}:" in r for r in resources(member_a))  # nothing of B's, nor the table
    member_b = build_policy(settings, member=B)
    assert f"arn:aws:sqs:us-east-1:{B}:billing-out" in resources(member_b)
    assert not any("sts:" in a for s in member_b["Statement"] for a in s["Action"])


def test_the_stackset_template_renders_and_passes_cfn_lint(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from worker.ops.iam import build_policy
    from worker.ops.member_iam import stackset_template
    from worker.ops.operator_iam import operator_policy

    settings = _two_account_settings()
    policies = [build_policy(settings, member=a.id) for a in settings.accounts]
    template = stackset_template(settings, policies)
    text = json.dumps(template)
    assert A not in text
    assert B not in text
    assert "${AWS::AccountId}" in text
    assert "${AWS::Partition}" in text
    role_ = template["Resources"]["MemberRole"]["Properties"]
    [trust] = role_["AssumeRolePolicyDocument"]["Statement"]
    principals = trust["Condition"]["Fn::If"][2]["ArnEquals"]["aws:PrincipalArn"]
    assert principals["Fn::If"][1:] == [  # the deployment's role, and the operators' if given
        [{"Ref": "DeploymentRoleArn"}, {"Ref": "OperatorRoleArn"}],
        {"Ref": "DeploymentRoleArn"},
    ]
    path = tmp_path / "member-role.json"
    path.write_text(text)
    lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(lint), str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    shipped = Path(__file__).resolve().parents[1] / "deploy" / "stackset" / "member-role.json"
    example = Path(__file__).resolve().parents[1] / "deploy" / "stackset" / "example-config.yaml"
    import yaml

    from worker.settings import Settings

    rendered = Settings(**yaml.safe_load(example.read_text()))
    policies = [build_policy(rendered, member=a.id) for a in rendered.accounts]
    operators = [operator_policy(rendered, member=a.id) for a in rendered.accounts]
    assert json.loads(shipped.read_text()) == stackset_template(rendered, policies, operators)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            {"queues": {"q": {"account": "333333333333"}}},
            "queues.q.account: 333333333333 is not among `accounts`",
        ),
        (
            {"queues": {"q": {"account": A, "region": "ap-south-1"}}},
            "queues.q.region: ap-south-1 is not among account",
        ),
        ({"accounts": [{"id": A, "role_arn": role(B)}]}, f"is a role of account {B}, not of {A}"),
        (
            {"accounts": [{"id": A, "role_arn": "arn:aws:iam::111111111111:user/x"}]},
            "is not an IAM role ARN",
        ),
        (
            {"discovery": {"prefix": "r-", "accounts": [B]}, "accounts": [ACCOUNTS[0]]},
            f"discovery.accounts: {B} is not among",
        ),
        (
            {"accounts": [{"id": A, "role_arn": role(A), "session_seconds": 7200}]},
            "less than or equal to 3600",  # role chaining: AWS caps it at one hour
        ),
        (
            {
                "queues": {
                    "q": {
                        "account": A,
                        "name": None,
                        "url": f"https://sqs.us-east-1.amazonaws.com/{B}/q",
                    }
                }
            },
            f"queues.q.url: a queue of account {B}, not of {A}",
        ),
        (
            {
                "queues": {
                    "q": {
                        "account": A,
                        "name": None,
                        "url": f"https://sqs.eu-west-1.amazonaws.com/{A}/q",
                    }
                }
            },
            "queues.q.url: a queue in eu-west-1, not in us-east-1",
        ),
        (
            {"discovery": {"prefix": "r-", "accounts": [A, A]}},
            "discovery.accounts: an account is listed twice",
        ),
        (
            {"accounts": [{"id": A, "role_arn": f"arn:aws-cn:iam::{A}:role/r"}]},
            f"accounts.{A}: `role_arn` is in partition aws-cn, us-east-1 in aws",
        ),
    ],
)
def test_a_place_that_is_not_configured_is_refused(change, said):
    from pydantic import ValidationError

    from worker.settings import Settings, deep_merge

    tree = {
        "accounts": ACCOUNTS,
        "defaults": {"policy": {"parking_queue": "parked"}},
        "queues": {"q": {"name": "q-dlq", "target": {"kind": "lambda", "function": "f"}}},
    }
    with pytest.raises(ValidationError, match=re.escape(said)):
        Settings(**deep_merge(tree, change))


@pytest.mark.slow  # a daemon (or CLI processes): make test, not make unit
async def test_status_and_the_console_show_where_each_queue_lives(aws, proxy, tmp_path):
    """Two accounts, a queue in each with the same name: each row reads its own account's
    queues (one message in A's DLQ, none in B's), and says where; the console too."""
    from tests.console_client import browser, running_console
    from tests.test_operator_loop import Cli

    async with AsyncExitStack() as stack:
        for account, region, waiting in ((A, "eu-west-1", 1), (B, "us-east-1", 0)):
            sqs = await member(aws, stack, account, region, "sqs")
            dlq = await create_queue(sqs, "orders-dlq")
            await create_queue(sqs, "parked")
            await create_queue(sqs, "out")
            for _ in range(waiting):
                await sqs.send_message(QueueUrl=dlq, MessageBody="{}")
    await create_queue(aws.sqs, "orders-dlq")  # the deployment's own: 0 messages
    await create_queue(aws.sqs, "parked")
    queues = {"a": _queue(A, "eu-west-1"), "b": _queue(B, "us-east-1")}
    settings = make_settings(aws.url, queues, accounts=ACCOUNTS)
    cli = Cli(tmp_path, settings.model_dump(mode="json"))

    shown = await cli("status")
    rows = await cli.json("status", "--json")
    checked = await cli("check-config", "--aws")  # asked in each queue's own account

    assert shown.returncode == 0, shown.stderr
    assert checked.returncode == 0, checked.stderr
    assert {r["queue"]: (r["account"], r["region"], r["dlq"]["visible"]) for r in rows} == {
        "a": (A, "eu-west-1", 1),
        "b": (B, "us-east-1", 0),
    }
    lines = shown.stdout.splitlines()
    assert lines[0].endswith("account/region")
    assert lines[1].split()[:2] == ["a", "1"]
    assert lines[1].endswith(f"{A}/eu-west-1")
    async with running_console(settings) as (url, _), browser(url) as b:
        page = (await b.get("/")).element("queues")
    assert f"{A}/eu-west-1" in page
    assert f"{B}/us-east-1" in page


async def test_a_queue_named_on_the_command_line_is_looked_for_where_it_lives():
    """restore --to: a URL says its account and region; a configured name one place; a name
    in two places must be given as a URL (a restore into the wrong account is not undone)."""
    from worker.aws.clients import Clients
    from worker.ops.context import ContextError, place_of_ref
    from worker.settings import Settings

    settings = Settings(
        accounts=ACCOUNTS,
        defaults={"policy": {"parking_queue": "parked"}},
        queues={
            "a": {**_queue(A, "eu-west-1"), "name": "a-dlq"},
            "b": {**_queue(B, "us-east-1"), "name": "b-dlq"},
        },
    )
    async with AsyncExitStack() as stack:
        clients = Clients(settings.aws, stack, pool=1, accounts=settings.accounts)

        def where(ref: str) -> tuple[str | None, str]:
            place = place_of_ref(settings, clients, ref)
            return place.account, place.region

        assert where("a-dlq") == (A, "eu-west-1")
        assert where("b") == (B, "us-east-1")
        assert where(f"https://sqs.eu-west-1.amazonaws.com/{B}/parked") == (B, "eu-west-1")
        assert where("https://sqs.us-west-2.amazonaws.com/123456789012/x") == (None, "us-west-2")
        assert where("elsewhere") == (None, "us-east-1")
        assert not clients.where
        assert clients.at(None, "eu-west-1").where == "own/eu-west-1"
        assert clients.at(A, "us-east-1").where == f"{A}/us-east-1"
        with pytest.raises(ContextError, match="lives in several places"):
            where("parked")


def test_a_targets_identity_includes_where_a_name_resolves():
    """`orders` in two accounts is two functions: two breakers and buckets, never one; one
    place spelt two ways is one; a target given by ARN is one from anywhere."""
    from worker.settings import Settings

    fn = f"arn:aws:lambda:us-east-1:{B}:function:shared"
    queues = {
        "home": {"name": "q1", "target": {"kind": "lambda", "function": "orders"}},
        "home-spelt": {
            "name": "q2",
            "region": "us-east-1",
            "target": {"kind": "lambda", "function": "orders"},
        },
        "a": {"name": "q3", "account": A, "target": {"kind": "lambda", "function": "orders"}},
        "a-spelt": {
            "name": "q4",
            "account": A,
            "region": "us-east-1",
            "target": {"kind": "lambda", "function": "orders"},
        },
        "b": {"name": "q5", "account": B, "target": {"kind": "lambda", "function": "orders"}},
        "arn-a": {"name": "q6", "account": A, "target": {"kind": "lambda", "function": fn}},
        "arn-home": {"name": "q7", "target": {"kind": "lambda", "function": fn}},
    }
    settings = Settings(
        accounts=ACCOUNTS, defaults={"policy": {"parking_queue": "p"}}, queues=queues
    )
    key = {name: q.target_key for name, q in settings.queues.items()}
    assert key["home"] == key["home-spelt"] == "lambda:orders"
    assert key["a"] == key["a-spelt"] == f"{A}/us-east-1/lambda:orders"
    assert key["b"] == f"{B}/us-east-1/lambda:orders"
    assert key["arn-a"] == key["arn-home"] == f"lambda:{fn}"


def test_a_queue_url_on_the_command_line_names_the_queue_of_its_account():
    """`parked purge <URL>` of B's queue must never act on the deployment's own queue of the
    same name."""
    from worker.ops.context import ContextError, configured
    from worker.settings import Settings

    settings = Settings(
        accounts=ACCOUNTS,
        defaults={"policy": {"parking_queue": "parked"}},
        queues={
            "home": {"name": "orders-dlq", "target": {"kind": "lambda", "function": "f"}},
            "b-eu": {**_queue(B, "eu-west-1")},
            "b-us": {**_queue(B, "us-east-1")},
        },
    )
    url = "https://sqs.{}.amazonaws.com/{}/orders-dlq"
    assert configured(settings, url.format("eu-west-1", B))[0] == "b-eu"
    assert configured(settings, url.format("us-east-1", B))[0] == "b-us"
    assert configured(settings, url.format("us-east-1", "123456789012"))[0] == "home"
    with pytest.raises(ContextError, match="not a configured queue"):
        configured(settings, url.format("eu-west-1", A))
    with pytest.raises(ContextError, match="names several configured queues"):
        configured(settings, "orders-dlq")


def _assumed(proxy: Any, states: list[bool], **kwargs: Any) -> Assumed:
    from worker.aws.clients import client_config
    from worker.settings import AwsSettings

    aws = AwsSettings(endpoint_url=proxy.url, read_timeout_seconds=2)
    return Assumed(
        get_session(),
        role(A),
        "us-east-1",
        endpoint_url=proxy.url,
        on_state=lambda up, why: states.append(up),
        config=client_config(aws, pool=2, total_attempts=2),
        **kwargs,
    )


async def test_a_cancelled_assume_still_finishes_and_sts_is_asked_once(aws, proxy):
    """Callers give up mid-assume (a deadline, a hook's timeout): the assume finishes all
    the same and is kept, so the next caller does not ask STS again (five callers that gave
    up asked five times, and a failure was never counted)."""
    proxy.add(Rule("sts", "AssumeRole", "delay", seconds=0.5))
    states: list[bool] = []
    assumed = _assumed(proxy, states)
    async with assumed.session.create_client(
        "sqs", region_name="us-east-1", endpoint_url=proxy.url
    ) as sqs:
        for _ in range(5):
            with anyio.move_on_after(0.1), contextlib.suppress(Exception):
                await sqs.list_queues()  # each caller gives up before STS answers
        await wait_for(lambda: states == [True], timeout=10)
        await sqs.list_queues()
    assert proxy.count("sts", "AssumeRole") == 1


async def test_a_failed_early_refresh_is_not_an_account_down(aws, proxy, monkeypatch):
    """Credentials still good for minutes, an early (advisory) refresh fails: calls go on
    with them, and the account is not said to be down."""
    monkeypatch.setattr(assume, "RETRY_SECONDS", 0)
    states: list[bool] = []
    assumed = _assumed(proxy, states, duration_seconds=900, refresh_before_seconds=899)
    async with assumed.session.create_client(
        "sqs", region_name="us-east-1", endpoint_url=proxy.url
    ) as sqs:
        await sqs.list_queues()
        credentials = assumed.session._credentials
        await wait_for(lambda: credentials.refresh_needed(899), timeout=5)
        proxy.add(Rule("sts", "AssumeRole", "error", status=403, code="AccessDenied"))
        await sqs.list_queues()  # the refresh failed; the old credentials serve
    assert states == [True]


def test_the_operators_reach_member_queues_through_the_member_roles_only():
    from worker.ops.operator_iam import operator_policy

    policy = operator_policy(_two_account_settings(), "123456789012")
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["AssumeMemberRoles"]["Resource"] == [role(A), role(B)]
    queues = {r for s in policy["Statement"] for r in s["Resource"] if ":sqs:" in r}
    # only the deployment's own queues: never a member's queue named in the wrong account
    assert queues == {
        "arn:aws:sqs:us-east-1:123456789012:home-dlq",
        "arn:aws:sqs:us-east-1:123456789012:parked",
    }


def test_the_operators_can_pause_and_replay_in_a_member_account():
    """Pause writes the DLQ's tags and a replay to the DLQ sends to it: the member role the
    operators assume carries those actions (only with an OperatorRoleArn in the template)."""
    from worker.ops.operator_iam import operator_policy

    policy = operator_policy(_two_account_settings(), member=A)
    dlq = {s["Sid"]: s for s in policy["Statement"]}["OperateDeadLetterQueues"]
    assert {"sqs:TagQueue", "sqs:UntagQueue", "sqs:SendMessage"} <= set(dlq["Action"])
    assert dlq["Resource"] == [f"arn:aws:sqs:eu-west-1:{A}:orders-dlq"]


def test_metric_labels_tell_places_apart_and_leave_the_deployments_alone():
    from worker.fleet.guards import _label
    from worker.settings import QueueSettings

    def label(target: dict[str, str], **where: str) -> str:
        return _label(QueueSettings(name="q", target=target, **where), "orders")

    by_arn = {"kind": "lambda", "function": f"arn:aws:lambda:eu-west-1:{B}:function:orders"}
    named = {"kind": "lambda", "function": "orders"}
    assert label(named) == label(by_arn) == "orders"  # the deployment's own: as always
    assert label(named, account=A, region="us-east-1") == f"{A}/us-east-1/orders"
    assert label(by_arn, account=A, region="us-east-1") == f"{B}/eu-west-1/orders"
    assert label(named, region="eu-west-1") == "own/eu-west-1/orders"


def test_the_home_region_is_read_from_an_aws_object_too():
    from worker.settings import AwsSettings, Settings

    settings = Settings(
        aws=AwsSettings(region="eu-west-1"),
        accounts=[{"id": A, "role_arn": role(A), "regions": ["eu-west-1"]}],
        defaults={"policy": {"parking_queue": "p"}},
        queues={
            "mine": {"name": "q", "region": "us-east-1", "target": {"kind": "sqs", "source": True}},
            "a": {"name": "q", "account": A, "target": {"kind": "sqs", "source": True}},
        },
    )
    assert settings.queues["mine"].region == "us-east-1"  # not dropped as if it were home
    assert settings.queues["a"].region == "eu-west-1"


async def test_a_refresh_that_fails_in_the_mandatory_window_is_an_account_down(
    aws, proxy, monkeypatch
):
    """Within the last minutes before expiry every call fails with the refresh: the account
    is down (and says so), not up with every call failing."""
    monkeypatch.setattr(assume, "RETRY_SECONDS", 0)
    states: list[bool] = []
    assumed = _assumed(proxy, states, duration_seconds=900, refresh_before_seconds=1800)
    async with assumed.session.create_client(
        "sqs", region_name="us-east-1", endpoint_url=proxy.url
    ) as sqs:
        await sqs.list_queues()  # assumed: 900 s left, inside the 900 s mandatory window
        proxy.add(Rule("sts", "AssumeRole", "error", status=403, code="AccessDenied"))
        with pytest.raises(Exception):  # noqa: B017, PT011 - the refresh's failure, as AWS says it
            await sqs.list_queues()
    assert states == [True, False]


async def test_check_config_says_whose_parking_queue_is_missing(aws):
    """A parking queue missing in one member account is named with its place and the queues
    that park there: "parking queue parked" named neither account nor queue."""
    from worker.ops.preflight import preflight

    async with AsyncExitStack() as stack:
        for account, region, parking in ((A, "eu-west-1", True), (B, "us-east-1", False)):
            sqs = await member(aws, stack, account, region, "sqs")
            await create_queue(sqs, "orders-dlq")
            await create_queue(sqs, "out")
            if parking:
                await create_queue(sqs, "parked")
    queues = {"a": _queue(A, "eu-west-1"), "b": _queue(B, "us-east-1")}
    errors, _ = await preflight(make_settings(aws.url, queues, accounts=ACCOUNTS))
    assert errors == [
        f"parking queue parked in {B}/us-east-1 (of b): does not exist "
        "(AWS.SimpleQueueService.NonExistentQueue)"
    ]


def test_a_parking_queue_is_one_place_however_it_is_written():
    """A name, a URL or an ARN, the home region written or not: one parking queue is one
    place (the console and status split or mark its count); another region's or another
    account's queue of the same name is another, a third account's too (it is not the
    deployment's own unless its id is the one the deployment's own queues' URLs name)."""
    from worker.ops.context import parking_place

    queues = {
        "name": {**_queue(None, "us-east-1"), "policy": {"parking_queue": "parked"}},
        "url": {
            **_queue(None, "us-east-1"),
            "policy": {"parking_queue": "https://sqs.us-east-1.amazonaws.com/999999999999/parked"},
        },
        "eu": {
            **_queue(None, "us-east-1"),
            "policy": {"parking_queue": "https://sqs.eu-west-1.amazonaws.com/999999999999/parked"},
        },
        "member-arn": {
            **_queue(None, "us-east-1"),
            "policy": {"parking_queue": f"arn:aws:sqs:us-east-1:{A}:parked"},
        },
        "member": {**_queue(A, "us-east-1"), "policy": {"parking_queue": "parked"}},
        "third": {
            **_queue(None, "us-east-1"),
            "policy": {"parking_queue": "arn:aws:sqs:us-east-1:333333333333:parked"},
        },
    }
    settings = make_settings("http://127.0.0.1:1", queues, accounts=ACCOUNTS)
    home = "999999999999"  # as the deployment's own DLQ URLs name it
    places = {name: parking_place(settings, q, home) for name, q in settings.queues.items()}
    assert places["name"] == places["url"] == (None, "us-east-1", "parked")
    assert places["eu"] == (None, "eu-west-1", "parked")
    assert places["member-arn"] == places["member"] == (A, "us-east-1", "parked")
    assert places["third"] == ("333333333333", "us-east-1", "parked")
    # the deployment's own id unknown (none of its queues read): an id stays itself
    assert parking_place(settings, settings.queues["url"])[0] == "999999999999"
