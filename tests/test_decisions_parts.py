"""The parts of decisions without the emulator: configuration errors at their key, the
message view, JMESPath truthiness, a hook's answers (SPEC.md, Decisions)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import ValidationError

from tests.test_config import QUEUE, _cli, config_dir, errors_for, write
from worker.core.envelope import DlqMessage
from worker.core.errors import DeliveryError, ErrorKind
from worker.core.failure import parse_body
from worker.core.jsontext import loads
from worker.core.parking import read_parked
from worker.decisions.decider import Decider
from worker.decisions.expressions import ExpressionFailed, Transform, truthy
from worker.decisions.hook import LambdaHook, checked, lambda_answer
from worker.decisions.view import build_view
from worker.hooks import Defer, Deliver, Park
from worker.ops.filters import Filters
from worker.settings import Settings
from worker.targets.eventbridge import put_events_entry

__all__ = ["config_dir"]  # the fixture, shared with the configuration tests


@pytest.mark.parametrize(
    ("decisions", "expected"),
    [
        (
            {"rules": [{"when": "body.", "action": "park", "reason": "x"}]},
            "queues.orders.rules[0].when: not a valid JMESPath expression",
        ),
        (
            {
                "rules": [
                    {"when": "`true`", "action": "park", "reason": "x"},
                    {"when": "a ==", "action": "deliver"},
                ]
            },
            "queues.orders.rules[1].when: not a valid JMESPath expression",
        ),
        ({"transform": "merge(body,"}, "queues.orders.transform: not a valid JMESPath"),
        ({"idempotency_key": "[["}, "queues.orders.idempotency_key: not a valid JMESPath"),
        (
            {"rules": [{"when": "`true`", "action": "park"}]},
            "queues.orders.rules[0]: `reason` is required for action park",
        ),
        (
            {"rules": [{"when": "`true`", "action": "defer"}]},
            "queues.orders.rules[0]: `delay_seconds` is required for action defer",
        ),
        (
            {"rules": [{"when": "`true`", "action": "park", "reason": "Manual Review"}]},
            "queues.orders.rules[0].reason: String should match pattern",
        ),
        (
            {"rules": [{"when": "`true`", "action": "defer", "delay_seconds": 50000}]},
            "queues.orders.rules[0].delay_seconds: Input should be less than or equal to 43200",
        ),
        ({"hook": "no_such_module_here:decide"}, "queues.orders.hook: cannot import"),
        ({"hook": "tests.decision_hooks:missing"}, "has no function missing"),
        ({"hook": "not a hook"}, "queues.orders.hook: a Python hook is `package.module:func"),
        ({"hook": {"lambda": ""}}, "queues.orders.hook: `lambda`: String should have at least"),
        ({"hook": {"lamda": "f"}}, "queues.orders.hook: `lambda`: Field required"),
    ],
)
def test_a_bad_decision_is_a_configuration_error_at_its_key(config_dir, decisions, expected):
    errors = errors_for(config_dir, {"queues": {"orders": {**QUEUE, **decisions}}})
    assert any(expected in e for e in errors), errors


def test_check_config_exits_2_naming_the_rule(tmp_path: Path):
    queue = {**QUEUE, "rules": [{"when": "body.amount >", "action": "park", "reason": "big"}]}
    bad = write(tmp_path / "bad.yaml", {"queues": {"orders": queue}})
    result = _cli("check-config", "--config", bad)
    assert result.returncode == 2
    assert "queues.orders.rules[0].when: not a valid JMESPath expression" in result.stderr


def test_a_lambda_hook_prints_as_it_is_written(tmp_path: Path):
    good = write(tmp_path / "ok.yaml", {"queues": {"orders": {**QUEUE, "hook": {"lambda": "f"}}}})
    result = _cli("check-config", "--config", good)
    assert result.returncode == 0, result.stderr
    assert "hook:\n      lambda: f" in result.stdout


def _message(body: str, **attributes: str) -> DlqMessage:
    attrs = {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()}
    return DlqMessage("m-1", "r", body, attrs, receive_count=3, sent_at=100.0)


def test_the_view_has_exactly_the_keys_of_the_spec():
    view = build_view("orders", _message('{"a": 1}', tenant="acme"), 2, 160.5, unwrap=False)
    assert set(view) == {
        "queue",
        "message_id",
        "attempt",
        "receive_count",
        "age_seconds",
        "group_id",
        "source_arn",
        "body",
        "text",
        "dlq_body",
        "attributes",
        "error",
    }
    assert view["body"] == view["dlq_body"] == {"a": 1}
    assert view["text"] == '{"a": 1}'
    assert view["attributes"] == {"tenant": "acme"}
    assert (view["attempt"], view["receive_count"], view["age_seconds"]) == (2, 3, 60.5)
    assert view["error"] is None
    json.dumps(view)  # a Lambda hook's input


def test_the_view_of_a_lambda_dlq_message_carries_its_error():
    message = _message("{}", RequestID="r-1", ErrorCode="200", ErrorMessage="boom")
    view = build_view("q", message, 1, 100.0, unwrap=False)
    assert view["error"] == {"code": "200", "message": "boom"}


def test_kind_auto_sees_the_payload_inside_a_destination_record():
    record = {
        "version": "1.0",
        "requestContext": {
            "requestId": "x",
            "functionArn": "arn:aws:lambda:us-east-1:1:function:f:$LATEST",
            "condition": "RetriesExhausted",
        },
        "requestPayload": {"order": 7},
        "responsePayload": {"errorType": "Sandbox.Timedout", "errorMessage": "took too long"},
    }
    body = json.dumps(record)
    view = build_view("q", _message(body), 1, 100.0, unwrap=True)
    assert view["body"] == {"order": 7}
    assert view["text"] == '{"order": 7}'
    assert view["dlq_body"] == record
    assert view["error"] == {"code": "Sandbox.Timedout", "message": "took too long"}
    plain = build_view("q", _message(body), 1, 100.0, unwrap=False)
    assert plain["body"] == record  # a target that takes the DLQ body as it is


def test_an_eventbridge_dlq_message_carries_its_error():
    message = _message(
        '{"detail": {}}',
        RULE_ARN="r",
        TARGET_ARN="t",
        ERROR_CODE="SDK_CLIENT_ERROR",
        ERROR_MESSAGE="no",
    )
    assert build_view("q", message, 1, 100.0, unwrap=True)["error"] == {
        "code": "SDK_CLIENT_ERROR",
        "message": "no",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (False, False),
        ("", False),
        ([], False),
        ({}, False),
        (0, True),
        ("x", True),
        ([0], True),
        (True, True),
    ],
)
def test_truthiness_is_jmespaths(value, expected):
    assert truthy(value) is expected


def test_a_transform_result_is_text_or_compact_json():
    view = {"body": {"a": [1, 2]}, "text": "plain"}
    assert Transform("text").apply(view) == "plain"
    assert Transform("body").apply(view) == '{"a":[1,2]}'
    assert Transform("length(body.a)").apply(view) == "2"


@pytest.mark.parametrize(
    "answer",
    [Defer(0), Defer(50_000), Park("Not Valid"), Park(""), "deliver", Defer(5, "Bad Reason")],
)
def test_a_hook_answer_outside_the_api_is_an_invalid_decision(answer):
    with pytest.raises(DeliveryError) as caught:
        checked(answer)
    assert caught.value.code == "HookError.InvalidDecision"


def test_a_hook_may_deliver_json_as_its_payload():
    assert checked(Deliver({"a": 1})) == Deliver('{"a":1}')  # type: ignore[arg-type]
    assert checked(None) is None


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"action": "deliver"}, Deliver()),
        ({"action": "deliver", "payload": {"x": 1}}, Deliver('{"x":1}')),
        ({"action": "defer", "delay_seconds": 30, "reason": "later"}, Defer(30, "later")),
        ({"action": "park", "reason": "manual"}, Park("manual")),
        (None, None),
    ],
)
def test_a_lambda_hooks_json_answer(answer, expected):
    assert lambda_answer(answer) == expected


@pytest.mark.parametrize(
    "answer", [{"action": "defer"}, {"action": "retry"}, [1], {"action": "park"}]
)
def test_a_lambda_hooks_bad_answer_is_an_invalid_decision(answer):
    with pytest.raises(DeliveryError, match=r"HookError\.InvalidDecision"):
        lambda_answer(answer)


CYCLE: list[object] = []
CYCLE.append(CYCLE)


@pytest.mark.parametrize(
    "payload",
    [
        {"at": datetime(2026, 12, 6, tzinfo=UTC)},
        {"amount": Decimal("1.50")},  # what boto3 gives for a DynamoDB number
        b"raw bytes",
        {"x": float("nan")},
        CYCLE,
        "\ud800 a lone surrogate",  # no target can encode it as UTF-8
    ],
    ids=["datetime", "decimal", "bytes", "nan", "cycle", "surrogate"],
)
def test_a_hook_payload_no_target_can_take_is_that_message_s_invalid_payload(payload):
    """Issue 27, defect 4: the payload was serialised outside the hook wrapper, and the
    TypeError failed the whole batch. It is this message's retryable failure."""
    with pytest.raises(DeliveryError) as caught:
        checked(Deliver(payload))
    assert caught.value.code == "HookError.InvalidPayload"
    assert caught.value.kind is ErrorKind.RETRYABLE


def test_a_transform_result_no_target_can_take_fails_the_transform():
    view = {"body": {"text": "\ud800"}}  # JSON's own escape gives a lone surrogate
    with pytest.raises(ExpressionFailed) as caught:
        Transform("body.text").apply(view)
    assert caught.value.code == "TransformFailed.InvalidPayload"


DEEP = "[" * 5000 + "]" * 5000


def test_a_body_nested_too_deeply_is_not_json_to_every_reader():
    """Issue 27, defect 5: RecursionError is not a ValueError; every parse of a body or an
    answer treats such a document as "not JSON"."""
    with pytest.raises(ValueError, match="nested too deeply"):
        loads(DEEP)
    view = build_view("q", DlqMessage("m", "r", DEEP), 1, 0.0, unwrap=True)
    assert view["body"] is None
    assert view["dlq_body"] is None
    assert view["text"] == DEEP
    wrapped = json.dumps({"Type": "Notification", "TopicArn": "t", "Message": DEEP})
    assert parse_body(wrapped).payload == DEEP  # an SNS envelope around it: opaque inside
    assert read_parked(DEEP, {}) is None  # not a parked message of ours
    assert not Filters.build(match=["a=1"])._body_matches(DEEP)
    with pytest.raises(DeliveryError, match="InvalidEventBody"):
        put_events_entry(DEEP, "default")
    with pytest.raises(DeliveryError, match="InvalidDecision"):
        lambda_answer_of(DEEP.encode())


def lambda_answer_of(raw: bytes) -> Any:
    """A Lambda hook's answer, as `LambdaHook` reads it from the function's payload."""
    return anyio.run(LambdaHook(_Answers(raw), "decider", timeout=5), {})


class _Answers:
    """A Lambda client whose function answers `raw` (the answer is what is under test)."""

    def __init__(self, raw: bytes) -> None:
        self._raw = raw

    async def invoke(self, **_: Any) -> dict[str, Any]:
        return {"Payload": _Stream(self._raw)}


class _Stream:
    def __init__(self, raw: bytes) -> None:
        self._raw = raw

    async def read(self) -> bytes:
        return self._raw


def test_a_message_that_breaks_its_own_decision_fails_alone():
    """Whatever one message makes go wrong while deciding (here: a binary attribute the view
    cannot read) is its own retryable `DecisionError`, not an exception for the batch."""
    settings = Settings(queues={"orders": {**QUEUE, "rules": [RULE]}})
    decider = Decider("orders", settings.queues["orders"], None)
    odd = {"blob": {"DataType": "Binary", "BinaryValue": "not bytes"}}
    messages = [DlqMessage("ok", "r1", '{"a": 1}'), DlqMessage("odd", "r2", "{}", attributes=odd)]

    fine, broken = anyio.run(decider.decide_all, [(m, 1) for m in messages], 0.0)

    assert fine.action == "deliver"
    assert broken.action == "failed"
    assert broken.failure is not None
    assert broken.failure.code == "DecisionError.TypeError"
    assert broken.failure.kind is ErrorKind.RETRYABLE


RULE = {"when": "body.a == `2`", "action": "park", "reason": "two"}


def test_a_hooks_park_error_is_kept_as_sqs_takes_it_on_one_line():
    """A hook may pass on what a producer recorded (an EventBridge ERROR_MESSAGE): control
    characters SQS refuses in an attribute, half a surrogate pair, 300 kB."""
    from worker.decisions.hook import checked
    from worker.hooks import Park

    decided = checked(Park("bad_input", "Up\x1b[2J\x00\nnext \ud800" + "x" * 300_000))
    assert isinstance(decided, Park)
    assert decided.error.startswith("Up\ufffd[2J\ufffd next \ufffdxxx")
    assert len(decided.error) == 256
    assert checked(Park("bad_input")).error is None


def test_a_lambda_hook_is_sent_a_body_with_half_a_surrogate_pair_escaped():
    from worker.decisions.hook import _payload

    sent = _payload({"body": "half \ud800 pair", "text": "é"})
    assert json.loads(sent) == {"body": "half \ud800 pair", "text": "é"}
    assert _payload({"text": "é"}) == '{"text": "é"}'.encode()


def test_a_named_rule_parks_under_its_name_and_names_are_unique():
    """Issue 34: `Rule.0` told an operator nothing; a rule's `name` is what parks under."""
    named = {**RULE, "name": "big_orders"}
    settings = Settings(queues={"orders": {**QUEUE, "rules": [RULE, named]}})
    decider = Decider("orders", settings.queues["orders"], None)
    messages = [DlqMessage("m", "r", '{"a": 2}')]
    [first] = anyio.run(decider.decide_all, [(m, 1) for m in messages], 0.0)
    assert first.decision.error == "Rule.0"  # unnamed: its position, as before
    settings = Settings(queues={"orders": {**QUEUE, "rules": [named]}})
    decider = Decider("orders", settings.queues["orders"], None)
    [verdict] = anyio.run(decider.decide_all, [(m, 1) for m in messages], 0.0)
    assert verdict.decision.error == "Rule.big_orders"
    with pytest.raises(ValidationError, match="rule names must differ: big_orders"):
        Settings(queues={"orders": {**QUEUE, "rules": [named, named]}})


def test_a_rule_name_is_not_a_number_an_unnamed_rule_would_share():
    named = {**RULE, "name": "0"}
    with pytest.raises(ValidationError, match="rule name 0: a name has a letter"):
        Settings(queues={"orders": {**QUEUE, "rules": [RULE, named]}})


def test_an_edited_body_is_refused_for_kind_auto():
    """Its parked body is the envelope naming the target, not what the target gets."""
    from worker.ops.acting import Move, reshape_for
    from worker.ops.context import QueueContext

    auto = {"name": "any-dlq", "target": {"kind": "auto", "allow": ["arn:aws:lambda:*"]}}
    settings = Settings(queues={"any": {**auto, "policy": {"parking_queue": "p"}}})
    ctx = QueueContext("any", settings.queues["any"], None, None)  # type: ignore[arg-type]
    for to in ("dlq", "target"):
        with pytest.raises(ValueError, match="with kind auto the parked body is the envelope"):
            reshape_for(ctx, Move(to, None, body="{}"))
