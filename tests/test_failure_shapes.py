"""The real-format corpus: each DLQ message shape parses to its payload (byte for byte) and
the target it names (shapes from aws-facts.md)."""

from __future__ import annotations

import json

import pytest

from worker.core.envelope import DlqMessage
from worker.core.failure import parse_failure, raw_member

FN = "arn:aws:lambda:us-east-1:123456789012:function:orders:$LATEST"
SUB = "arn:aws:sns:us-east-1:123456789012:alerts:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55"
# the original event, with the spacing and key order the producer used
EVENT = '{"orderId":  42, "items": [1,2],"note":"ü"}'


def attr(value: str, kind: str = "String") -> dict:
    return {"DataType": kind, "StringValue": value}


def record(payload: str | None, **extra: object) -> str:
    head = (
        '{"version":"1.0","timestamp":"2026-11-27T10:00:00.000Z",'
        f'"requestContext":{{"requestId":"r-1","functionArn":"{FN}",'
        '"condition":"RetriesExhausted","approximateInvokeCount":3},'
    )
    tail = '"responseContext":{"statusCode":200,"executedVersion":"$LATEST","functionError":"Unhandled"}'
    for key, value in extra.items():
        tail += f',"{key}":{json.dumps(value)}'
    middle = f'"requestPayload":{payload},' if payload is not None else ""
    return head + middle + tail + "}"


def sns(message: str) -> str:
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:alerts",
            "Message": message,
            "Timestamp": "2026-11-27T09:00:00.000Z",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn="
            + SUB,
        }
    )


EB_EVENT = json.dumps(
    {
        "version": "0",
        "id": "e-1",
        "detail-type": "OrderPlaced",
        "source": "shop",
        "detail": {"orderId": 42},
    }
)
EB_ATTRS = {
    "RULE_ARN": attr("arn:aws:events:us-east-1:123456789012:rule/orders"),
    "TARGET_ARN": attr("arn:aws:sqs:us-east-1:123456789012:orders-in"),
    "ERROR_CODE": attr("SDK_CLIENT_ERROR"),
    "ERROR_MESSAGE": attr("Unable to send"),
    "RETRY_ATTEMPTS": attr("185", "Number"),
    "EXHAUSTED_RETRY_CONDITION": attr("MaximumRetryAttempts"),
}

CASES = {
    "lambda async DLQ": (
        DlqMessage(
            "1",
            "r",
            EVENT,
            attributes={
                "RequestID": attr("r-9"),
                "ErrorCode": attr("200", "Number"),
                "ErrorMessage": attr("Task timed out"),
            },
        ),
        ("lambda_dlq", EVENT, None, "Task timed out", True),
    ),
    "lambda destination record": (
        DlqMessage("2", "r", record(EVENT)),
        ("lambda_destination", EVENT, FN, "Unhandled", True),
    ),
    "lambda destination record without payload": (
        DlqMessage("3", "r", record(None)),
        ("lambda_destination", record(None), FN, "Unhandled", False),
    ),
    "stream batch record": (
        DlqMessage(
            "4", "r", record(None, KinesisBatchInfo={"shardId": "shardId-0", "batchSize": 10})
        ),
        ("stream_batch", None, FN, "Unhandled", False),
    ),
    "eventbridge rule DLQ": (
        DlqMessage("5", "r", EB_EVENT, attributes=EB_ATTRS),
        (
            "eventbridge_dlq",
            EB_EVENT,
            "arn:aws:sqs:us-east-1:123456789012:orders-in",
            "SDK_CLIENT_ERROR",
            True,
        ),
    ),
    "sns envelope, raw delivery off": (
        DlqMessage("6", "r", sns(EVENT)),
        ("sns_envelope", EVENT, SUB, None, True),
    ),
    "sns raw delivery": (
        DlqMessage("7", "r", EVENT, attributes={"origin": attr("sns")}),
        ("opaque", EVENT, None, None, True),
    ),
    "sqs redrive": (
        DlqMessage("8", "r", EVENT, source_arn="arn:aws:sqs:us-east-1:123456789012:orders"),
        ("sqs_redrive", EVENT, "arn:aws:sqs:us-east-1:123456789012:orders", None, True),
    ),
    "destination record inside an sns envelope": (
        DlqMessage("9", "r", sns(record(EVENT))),
        ("lambda_destination", EVENT, FN, "Unhandled", True),
    ),
    "sns envelope inside an eventbridge DLQ event (the target got the event)": (
        DlqMessage(
            "10",
            "r",
            json.dumps({**json.loads(EB_EVENT), "detail": json.loads(sns(EVENT))}),
            attributes=EB_ATTRS,
        ),
        (
            "eventbridge_dlq",
            None,
            "arn:aws:sqs:us-east-1:123456789012:orders-in",
            "SDK_CLIENT_ERROR",
            True,
        ),
    ),
    "not json": (DlqMessage("11", "r", "<xml/>"), ("opaque", "<xml/>", None, None, True)),
    "json array": (DlqMessage("12", "r", "[1, 2]"), ("opaque", "[1, 2]", None, None, True)),
}


@pytest.mark.parametrize("name", CASES)
def test_corpus(name):
    message, (shape, payload, target, error, replayable) = CASES[name]
    event = parse_failure(message)
    assert event.shape == shape
    assert event.payload == (payload if payload is not None else message.body)  # byte for byte
    assert event.target_arn == target
    assert event.error == error
    assert event.replayable is replayable


def test_nested_envelopes_are_recorded():
    event = parse_failure(DlqMessage("9", "r", sns(record(EVENT))))
    assert event.via == ("sns",)
    assert event.first_failed_at == pytest.approx(1795773600.0)


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ('{"a": 1, "b" : {"x": [1, 2]} }', "b", '{"x": [1, 2]}'),
        ('{"a": "b\\"c", "b": "q"}', "b", '"q"'),
        ('{"nested": {"b": 1}, "c": 2}', "b", None),
        ("[1]", "b", None),
    ],
)
def test_raw_member(text, key, expected):
    assert raw_member(text, key) == expected
