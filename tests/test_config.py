"""Configuration: layering, inheritance, and every validation rule with its `path: message`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from worker.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parent.parent

QUEUE = {
    "name": "orders-dlq",
    "target": {"kind": "lambda", "function": "orders"},
    "policy": {"parking_queue": "parked"},
}


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    for var in list(__import__("os").environ):
        if var.startswith("RETRY_WORKER_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("RETRY_WORKER_CONFIG_DIR", str(tmp_path))
    return tmp_path


def write(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def errors_for(config_dir: Path, data: dict) -> list[str]:
    extra = write(config_dir / "extra.yaml", data)
    with pytest.raises(ConfigError) as caught:
        load_settings(None, [extra])
    return caught.value.errors


def test_layers_merge_maps_and_later_layers_win(config_dir, monkeypatch):
    write(config_dir / "base.yaml", {"aws": {"region": "eu-west-1"}, "queues": {"orders": QUEUE}})
    write(
        config_dir / "staging.yaml",
        {"defaults": {"concurrency": 3}, "aws": {"max_pool_connections": 7}},
    )
    extra = write(config_dir / "x.yaml", {"queues": {"orders": {"policy": {"max_attempts": 9}}}})
    monkeypatch.setenv("RETRY_WORKER_AWS__REGION", "ap-south-1")
    monkeypatch.setenv("RETRY_WORKER_QUEUES__ORDERS__CONCURRENCY", "4")

    settings = load_settings("staging", [extra])

    assert settings.aws.region == "ap-south-1"  # env var wins over every file
    assert settings.aws.max_pool_connections == 7  # env file
    orders = settings.queues["orders"]
    assert orders.policy.max_attempts == 9  # --config file
    assert orders.policy.parking_queue == "parked"  # kept from base (maps merge)
    assert orders.concurrency == 4  # env var into a queue
    assert settings.defaults.concurrency == 3


def test_queues_inherit_defaults_and_their_own_keys_win(config_dir):
    data = {
        "defaults": {
            "policy": {"max_attempts": 2, "parking_queue": "p", "backoff": {"jitter": "none"}}
        },
        "queues": {"a": {**QUEUE, "policy": {"backoff": {"initial_seconds": 1}}}},
    }
    settings = load_settings(None, [write(config_dir / "c.yaml", data)])
    policy = settings.queues["a"].policy
    assert (policy.max_attempts, policy.parking_queue) == (2, "p")
    assert (policy.backoff.jitter, policy.backoff.initial_seconds) == ("none", 1)


def test_queues_feeding_one_target_may_share_identical_limits(config_dir):
    same = {"per_second": 3.0, "burst": 4}
    data = {
        "queues": {
            "a": {**QUEUE, "target": {**QUEUE["target"], "rate_limit": same}},
            "b": {**QUEUE, "name": "b", "target": {**QUEUE["target"], "rate_limit": same}},
        }
    }
    settings = load_settings(None, [write(config_dir / "c.yaml", data)])
    assert settings.queues["b"].effective_rate_limit.per_second == 3.0


def test_env_selected_by_variable(config_dir, monkeypatch):
    write(config_dir / "prod.yaml", {"http": {"port": 9999}})
    monkeypatch.setenv("RETRY_WORKER_ENV", "prod")
    assert load_settings().http.port == 9999


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"aws": {"regoin": "x"}}, "aws.regoin: unknown key `regoin` (did you mean `region`?)"),
        (
            {"aws": {"read_timeout_seconds": 20}},
            "aws.read_timeout_seconds: must exceed defaults.receive.wait_seconds (20.0 <= 20)",
        ),
        (
            {"defaults": {"policy": {"backoff": {"max_seconds": 50000}}}},
            "defaults.policy.backoff.max_seconds: must be <= 43200 (the SQS visibility timeout limit)",
        ),
        (
            {"queues": {"o": {**QUEUE, "policy": {"parking_queue": None}}}},
            "queues.o.policy.parking_queue: required (set it on the queue or in defaults.policy.parking_queue)",
        ),
        (
            {"queues": {"o": {"target": QUEUE["target"], "policy": QUEUE["policy"]}}},
            "queues.o: set exactly one of `url` or `name`",
        ),
        (
            {"queues": {"o": {**QUEUE, "url": "https://x"}}},
            "queues.o: set exactly one of `url` or `name`",
        ),
        (
            {"queues": {"o": {**QUEUE, "target": {"kind": "sqs"}}}},
            "queues.o.target: set exactly one of `queue` (name or URL) or `source: true`",
        ),
        (
            {"queues": {"o": {**QUEUE, "target": {"kind": "lambda"}}}},
            "queues.o.target.function: Field required",
        ),
        (
            {"queues": {"o": {**QUEUE, "receive": {"batch_size": 11}}}},
            "queues.o.receive.batch_size: Input should be less than or equal to 10",
        ),
        (
            {"queues": {"o": {**QUEUE, "receive": {"wait_seconds": 21}}}},
            "queues.o.receive.wait_seconds: Input should be less than or equal to 20",
        ),
        (
            {"defaults": {"policy": {"backoff": {"jitter": "some"}}}},
            "defaults.policy.backoff.jitter: Input should be 'none', 'full', 'equal' or 'decorrelated'",
        ),
        (
            {
                "queues": {
                    "o": {
                        **QUEUE,
                        "policy": {"parking_queue": "p", "park_on": ["X"], "retry_on": ["X"]},
                    }
                }
            },
            "queues.o.policy.park_on: overlaps retry_on",
        ),
        (
            {"defaults": {"policy": {"backoff": {"initial_seconds": 10, "max_seconds": 5}}}},
            "defaults.policy.backoff.initial_seconds: must be <= max_seconds",
        ),
        (
            {
                "queues": {
                    "a": QUEUE,
                    "b": {
                        **QUEUE,
                        "name": "b",
                        "target": {**QUEUE["target"], "rate_limit": {"per_second": 1}},
                    },
                }
            },
            "queues.b.target.rate_limit: differs from queues.a (queues feeding the same target share one token bucket)",
        ),
        (
            {
                "queues": {
                    "a": QUEUE,
                    "b": {**QUEUE, "name": "b", "circuit_breaker": {"open_seconds": 5}},
                }
            },
            "queues.b.target.circuit_breaker: differs from queues.a (queues feeding the same target share one circuit breaker)",
        ),
        (
            {"queues": {"a": {**QUEUE, "circuit_breaker": {"window": 5, "minimum_calls": 6}}}},
            "queues.a.circuit_breaker.minimum_calls: must be <= window",
        ),
        (
            {"coordination": {"backend": "dynamodb"}},
            "coordination: `table` is required when `backend` is dynamodb",
        ),
        (
            {"coordination": {"backend": "redis", "table": "t"}},
            "coordination.backend: Input should be 'none' or 'dynamodb'",
        ),
        (
            {"coordination": {"backend": "dynamodb", "table": "rw", "heartbeat_seconds": 0.1}},
            "coordination.heartbeat_seconds: Input should be greater than or equal to 0.5",
        ),
    ],
)
def test_each_rule_reports_its_key_path(config_dir, data, expected):
    """Each as `path.to.key: message`, after the file and line that set it when one did."""
    errors = errors_for(config_dir, data)
    assert any(e == expected or e.endswith(f": {expected}") for e in errors), errors


def test_unknown_environment_section_is_an_error(config_dir, monkeypatch):
    monkeypatch.setenv("RETRY_WORKER_AWSS__REGION", "x")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.errors == ["RETRY_WORKER_AWSS__REGION: unknown setting section `awss`"]


def test_missing_named_file_is_an_error(config_dir):
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        load_settings("nope")


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RETRY_WORKER_")}
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("env", ["local", "staging", "production"])
def test_shipped_environments_are_valid(env):
    result = _cli("check-config", "--env", env)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["queues"]


def test_check_config_prints_every_error_and_exits_2(tmp_path):
    bad = write(tmp_path / "bad.yaml", {"aws": {"regoin": 1}, "http": {"port": "x"}})
    result = _cli("check-config", "--config", bad)
    assert result.returncode == 2
    assert f"{bad}:2: aws.regoin: unknown key `regoin` (did you mean `region`?)" in result.stderr
    assert f"{bad}:4: http.port: Input should be a valid integer" in result.stderr


def test_a_typo_is_named_once_where_it_was_written_with_a_suggestion(config_dir):
    """Issue 34: a key under `defaults` was reported once per queue that inherits it, as
    pydantic's "Extra inputs are not permitted", with no file and no suggestion."""
    text = """\
defaults:
  policy:
    max_atempts: 3
    parking_queue: parked
queues:
  orders:
    name: orders-dlq
    target: {kind: lambda, function: orders}
  billing:
    name: billing-dlq
    concurency: 4
    target: {kind: lambda, function: billing}
    rules:
      - when: "true"
        acton: park
"""
    path = config_dir / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(None, [str(path)])
    assert caught.value.errors == [
        f"{path}:3: defaults.policy.max_atempts: unknown key `max_atempts` (did you mean "
        "`max_attempts`?)",
        f"{path}:11: queues.billing.concurency: unknown key `concurency` (did you mean "
        "`concurrency`?)",
        f"{path}:15: queues.billing.rules[0].acton: unknown key `acton` (did you mean `action`?)",
        f"{path}:14: queues.billing.rules[0].action: Field required",  # what the typo left out
    ]


def test_a_webhook_url_pasted_as_its_url_file_is_refused_without_quoting_it(config_dir):
    """`url_file` holding the URL itself (the secret in the configuration) is refused at load,
    and the error never repeats it: read as a path, every failure quoted it in the logs."""
    for pasted in (
        "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX",
        "hooks.slack.com/services/T000/B000/XXXXSECRETXXXX",  # without its scheme
    ):
        path = config_dir / "mine.yaml"
        queue = {"name": "orders-dlq", "target": {"kind": "sqs", "queue": "out"}}
        data = {
            "queues": {"orders": queue},
            "notify": {"sinks": [{"webhook": {"url_file": pasted}}]},
        }
        write(path, data)
        with pytest.raises(ConfigError) as caught:
            load_settings(None, [str(path)])
        [error] = caught.value.errors
        assert "notify.sinks[0].webhook.url_file: the absolute path of a file that holds" in error
        assert "SECRET" not in error


def test_a_bad_value_inherited_from_defaults_is_named_once_in_defaults(config_dir):
    path = write(
        config_dir / "mine.yaml",
        {
            "defaults": {"receive": {"batch_size": 11}, "policy": {"parking_queue": "p"}},
            "queues": {"a": QUEUE, "b": {**QUEUE, "name": "b-dlq"}},
        },
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(None, [path])
    batch = [e for e in caught.value.errors if "batch_size" in e]
    assert batch == [
        f"{path}:5: defaults.receive.batch_size: Input should be less than or equal to 10"
    ]


def test_an_error_is_placed_in_the_file_whose_value_stands(config_dir, monkeypatch):
    """The file that sets the key itself, not the last one that sets any of its parents; an
    environment variable's value is the variable's; a list a queue sets is its own."""
    (config_dir / "base.yaml").write_text(
        "defaults:\n  receive:\n    batch_size: 11\n  policy:\n    parking_queue: p\n"
        "  rules:\n    - {when: 'true', action: deliver}\n"
    )
    prod = config_dir / "production.yaml"
    prod.write_text(
        "defaults:\n  concurrency: 3\nqueues:\n  '2024':\n    name: q\n    concurency: 2\n"
        "    target: {kind: lambda, functon: f}\n  orders:\n    name: orders-dlq\n"
        "    target: {kind: lambda, function: f}\n    rules:\n      - {action: deliver}\n"
    )
    monkeypatch.setenv("RETRY_WORKER_HTTP__PORT", "99999")
    with pytest.raises(ConfigError) as caught:
        load_settings("production")
    base = config_dir / "base.yaml"
    assert caught.value.errors == [
        f"{prod}:6: queues.2024.concurency: unknown key `concurency` (did you mean `concurrency`?)",
        f"{prod}:7: queues.2024.target.functon: unknown key `functon` (did you mean `function`?)",
        "RETRY_WORKER_HTTP__PORT: http.port: Input should be less than or equal to 65535",
        f"{base}:3: defaults.receive.batch_size: Input should be less than or equal to 10",
        f"{prod}:7: queues.2024.target.function: Field required",
        f"{prod}:12: queues.orders.rules[0].when: Field required",
    ]


def test_a_rule_across_keys_is_placed_too_and_sections_take_any_case(config_dir):
    path = write(
        config_dir / "mine.yaml",
        {
            "AWS": {"region": "eu-west-1"},
            "queues": {"o": {"name": "o-dlq", "target": {"kind": "lambda", "function": "f"}}},
        },
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(None, [path])
    assert caught.value.errors == [
        f"{path}:4: queues.o.policy.parking_queue: required (set it on the queue or in "
        "defaults.policy.parking_queue)"
    ]


def test_an_anchor_that_contains_itself_is_a_configuration_error(config_dir):
    path = config_dir / "loop.yaml"
    path.write_text("aws:\n  kms_key_arns: &a [*a]\n")
    with pytest.raises(ConfigError):
        load_settings(None, [str(path)])


def test_a_variables_bad_value_is_the_variables_once(config_dir, monkeypatch):
    path = write(
        config_dir / "x.yaml", {"defaults": {"concurrency": 3}, "queues": {"orders": QUEUE}}
    )
    monkeypatch.setenv("RETRY_WORKER_DEFAULTS__CONCURRENCY", "abc")
    with pytest.raises(ConfigError) as caught:
        load_settings(None, [path])
    said = [e for e in caught.value.errors if "concurrency" in e]
    assert said == [
        "RETRY_WORKER_DEFAULTS__CONCURRENCY: defaults.concurrency: Input should be a valid "
        "integer, unable to parse string as an integer"
    ]


def test_an_error_in_a_list_is_placed_in_the_file_whose_list_stands(config_dir, tmp_path):
    """Lists replace, they do not merge: a rule missing its `when` in the overlay's list is
    the overlay's, though the base file's list (which no longer stands) had a `when`."""
    (config_dir / "base.yaml").write_text(
        "defaults:\n  policy:\n    parking_queue: parked\n"
        "queues:\n  orders:\n    name: orders-dlq\n    target: {kind: sqs, queue: out}\n"
        '    rules:\n      - when: "body.amount > `100`"\n        action: park\n'
        "        reason: manual_review\n"
    )
    overlay = tmp_path / "override.yaml"
    overlay.write_text(
        "queues:\n  orders:\n    rules:\n      - action: park\n        reason: big_order\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(None, [str(overlay)])
    assert caught.value.errors == [f"{overlay}:4: queues.orders.rules[0].when: Field required"]


def test_typos_under_discovery_defaults_and_in_variables_are_named_with_a_suggestion(
    config_dir, monkeypatch
):
    """`discovery.defaults` is read as a queue's settings only at run time, and a variable
    sets a path of its own: a typo in either was pydantic's "Extra inputs are not
    permitted", the discovery one only once every other error was fixed."""
    path = config_dir / "mine.yaml"
    path.write_text(
        "defaults:\n  policy:\n    parking_queue: parked\n"
        "discovery:\n  prefix: dlq-\n  defaults:\n"
        '    target: {kind: auto, allow: ["arn:aws:lambda:us-east-1:123456789012:function:f"]}\n'
        "    policy:\n      max_atempts: 3\n"
        "queues: {}\n"
    )
    monkeypatch.setenv("RETRY_WORKER_DEFAULTS__POLICY__MAX_ATEMTPS", "3")
    with pytest.raises(ConfigError) as caught:
        load_settings(None, [str(path)])
    assert caught.value.errors == [
        f"{path}:9: discovery.defaults.policy.max_atempts: unknown key `max_atempts` (did you "
        "mean `max_attempts`?)",
        "RETRY_WORKER_DEFAULTS__POLICY__MAX_ATEMTPS: defaults.policy.max_atemtps: unknown key "
        "`max_atemtps` (did you mean `max_attempts`?)",
    ]
