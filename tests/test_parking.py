"""The parking format: metadata as attributes, then one JSON attribute, then an envelope."""

from __future__ import annotations

import json

from worker.core.envelope import DlqMessage
from worker.core.limits import message_size
from worker.core.parking import _forms, build_parked, parking_metadata, read_parked

META = parking_metadata(
    reason="max_attempts", attempts=5, error="ServiceException", source_queue="q", parked_at=0
)


def _attrs(n: int) -> dict:
    return {f"a{i}": {"DataType": "String", "StringValue": str(i)} for i in range(n)}


def _message(n: int) -> DlqMessage:
    return DlqMessage("m", "r", "bödy \x01 bytes", attributes=_attrs(n))


def test_metadata_is_written_as_five_attributes_when_they_fit():
    parked = build_parked(_message(5), META)
    assert parked.body == "bödy \x01 bytes"
    assert len(parked.attributes) == 10
    assert parked.attributes["retry-worker.reason"]["StringValue"] == "max_attempts"
    assert parked.attributes["retry-worker.parked-at"]["StringValue"] == "1970-01-01T00:00:00+00:00"
    assert parked.attributes["a4"] == _attrs(5)["a4"]


def test_metadata_goes_into_one_json_attribute_when_five_do_not_fit():
    parked = build_parked(_message(9), META)
    assert parked.body == "bödy \x01 bytes"
    assert len(parked.attributes) == 10
    assert json.loads(parked.attributes["retry-worker.meta"]["StringValue"]) == META


def test_ten_attributes_are_kept_inside_an_envelope():
    message = _message(9)
    message.attributes["bin"] = {"DataType": "Binary", "BinaryValue": b"\x00\x01"}
    parked = build_parked(message, META)
    envelope = json.loads(parked.body)
    assert envelope["body"] == "bödy \x01 bytes"
    assert envelope["retry_worker"] == META
    assert len(envelope["attributes"]) == 10
    assert envelope["attributes"]["bin"] == {"DataType": "Binary", "BinaryValue": "AAE="}


def test_an_envelope_keeps_a_body_in_another_script_at_its_own_size():
    """A body of 120,000 bytes in "é" (and 10 attributes) fits a 256 KiB parking queue in
    its envelope: ASCII-escaped it took 360,000 and the message was unparkable."""
    body = "é" * 60_000
    message = DlqMessage("m", "r", body, attributes=_attrs(10))
    parked = build_parked(message, META, 256 * 1024)
    assert parked is not None
    assert "é" in parked.body
    assert message_size(parked.body, parked.attributes) < 256 * 1024
    view = read_parked(parked.body, parked.attributes)
    assert view is not None
    assert view.body == body


def test_stale_metadata_from_an_earlier_parking_is_replaced():
    message = _message(2)
    message.attributes["retry-worker.reason"] = {"DataType": "String", "StringValue": "old"}
    parked = build_parked(message, META)
    assert parked.attributes["retry-worker.reason"]["StringValue"] == "max_attempts"
    assert len(parked.attributes) == 7


def _read(parked):
    from worker.core.parking import read_parked

    return read_parked(parked.body, parked.attributes)


def test_every_parking_form_reads_back_to_the_original():
    for n in (5, 9):
        view = _read(build_parked(_message(n), META))
        assert view.meta == META
        assert view.body == "bödy \x01 bytes"
        assert view.attributes == _attrs(n)
    message = _message(9)
    message.attributes["bin"] = {"DataType": "Binary", "BinaryValue": b"\x00\x01"}
    view = _read(build_parked(message, META))
    assert view.meta == META
    assert view.body == "bödy \x01 bytes"
    assert view.attributes["bin"] == {"DataType": "Binary", "BinaryValue": b"\x00\x01"}
    assert len(view.attributes) == 10


def test_a_message_we_did_not_park_reads_as_none():
    from worker.core.parking import read_parked

    assert read_parked("plain", _attrs(3)) is None
    marker = {"retry-worker.attempt": {"DataType": "Number", "StringValue": "2"}}
    assert read_parked("plain", marker) is None


def _marked(n: int) -> DlqMessage:
    attributes = {**_attrs(n), "retry-worker.attempt": {"DataType": "Number", "StringValue": "4"}}
    return DlqMessage("m", "r", "body", attributes=attributes)


def test_the_attempt_marker_never_reaches_the_envelope():
    """Issue 18, defect 5: read back, the envelope's attributes held `retry-worker.attempt`,
    so `replay --to dlq` carried the old attempts."""
    from worker.core.parking import read_parked

    parked = build_parked(_marked(10), META)
    assert "retry-worker.attempt" not in json.loads(parked.body)["attributes"]
    view = read_parked(parked.body, parked.attributes)
    assert view is not None
    assert set(view.attributes) == set(_attrs(10))


def test_an_envelope_written_with_the_marker_reads_back_without_it():
    from worker.core.parking import plain_attributes, read_parked

    message = _marked(10)
    envelope = {
        "retry_worker": META,
        "body": "b",
        "attributes": plain_attributes(message.attributes),
    }
    packed = {"retry-worker.meta": {"DataType": "String", "StringValue": json.dumps(META)}}
    view = read_parked(json.dumps(envelope), packed)
    assert view is not None
    assert "retry-worker.attempt" not in view.attributes


def test_the_marker_does_not_take_an_attribute_slot_when_parking():
    parked = build_parked(_marked(9), META)
    assert parked.body == "body"  # nine of theirs and the packed metadata: no envelope
    assert "retry-worker.attempt" not in parked.attributes


def test_the_source_arn_is_left_out_rather_than_keep_a_message_from_parking():
    """`source-arn` helps a replay; it must never make a message unparkable that would
    have parked without it (it stays in its DLQ, held, when no form fits)."""
    source = "arn:aws:sqs:us-east-1:123456789012:" + "s" * 70
    meta = {**META, "source-arn": source}
    roomy = build_parked(_message(0), meta)
    assert roomy is not None
    assert read_parked(roomy.body, roomy.attributes).meta["source-arn"] == source
    smallest = min(message_size(f.body, f.attributes) for f in _forms(_message(0), meta))
    tight = build_parked(_message(0), meta, max_bytes=smallest - 1)
    assert tight is not None
    kept = read_parked(tight.body, tight.attributes).meta
    assert "source-arn" not in kept
    assert kept["reason"] == "max_attempts"


def test_what_a_target_said_in_another_script_survives_the_keepers_re_park():
    """The keeper's copy adds `kept` and `kept-from`: the metadata moves into the one JSON
    attribute. Written ASCII-escaped, 341 CJK characters took 2,046 bytes instead of 1,023,
    and a message near the limit lost the error message on its first re-park."""
    from worker.core.parking import kept_copy

    said = "錯" * 341
    limit = 262_144
    body = "x" * (limit - 2_000)
    foreign = {f"a{i}": {"DataType": "String", "StringValue": "v"} for i in range(2)}
    meta = parking_metadata(
        reason="max_attempts",
        attempts=3,
        error="FunctionError.Unhandled",
        source_queue="https://sqs.eu-west-1.amazonaws.com/123456789012/orders-dlq",
        parked_at=1_800_000_000,
        message_id="m-1",
        error_type="Fehler",
        error_message=said,
    )
    first = build_parked(DlqMessage("m-1", "r", body, attributes=foreign), meta, limit)
    assert first is not None
    assert read_parked(first.body, first.attributes).meta["error-message"] == said
    kept = kept_copy("p-1", first.body, first.attributes, limit)
    view = read_parked(kept.body, kept.attributes)
    assert view.meta["kept"] == "1"
    assert view.meta["error-message"] == said
    assert message_size(kept.body, kept.attributes) <= limit


def test_metadata_with_half_a_surrogate_pair_reads_back_clean_and_is_kept():
    """JSON can escape a lone surrogate, SQS takes the escape; sent on raw by the keeper, it
    would fail to encode and stop every pass over the queue."""
    from worker.core.parking import kept_copy

    packed = json.dumps({**META, "error-message": "half \ud800 pair"})
    attributes = {"retry-worker.meta": {"DataType": "String", "StringValue": packed}}
    view = read_parked("body", attributes)
    assert view.meta["error-message"] == "half \ufffd pair"
    kept = kept_copy("p-1", "body", attributes, 262_144)
    assert read_parked(kept.body, kept.attributes).meta["error-message"] == "half \ufffd pair"
    assert message_size(kept.body, kept.attributes) > 0  # encodes
