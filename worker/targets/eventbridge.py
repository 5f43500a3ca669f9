"""EventBridge target: PutEvents to a bus, in requests of at most 10 entries and 256 KiB (entry
sizes by EventBridge's rule), every entry's result read.

A body that is an EventBridge event (an EventBridge DLQ holds the event its target failed to
get) is sent with its own source, detail-type, detail and resources; any other JSON object
becomes the detail of a `retry-worker.replay` event. An entry over 256 KiB is parked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from worker.aws.clients import Client
from worker.aws.errors import kind_of
from worker.core.errors import DeliveryError, ErrorKind
from worker.core.jsontext import loads
from worker.core.limits import EVENTS_MAX_BATCH_BYTES, EVENTS_MAX_ENTRY_BYTES, events_entry_size
from worker.settings import EventBridgeTarget
from worker.targets.base import (
    Delivery,
    HandOff,
    Result,
    deliver_batched,
    short_name,
    too_large,
    trace_of,
)

RETRYABLE_ENTRY_CODES = {
    "ThrottlingException": ErrorKind.THROTTLED,
    "InternalFailure": ErrorKind.RETRYABLE,
}


def put_events_entry(body: str, bus: str) -> dict[str, Any]:
    try:
        event = loads(body)
    except ValueError as exc:
        raise DeliveryError(
            ErrorKind.PERMANENT, "InvalidEventBody", "not JSON", park_reason="unparseable"
        ) from exc
    if not isinstance(event, dict):
        raise DeliveryError(
            ErrorKind.PERMANENT, "InvalidEventBody", "not a JSON object", park_reason="unparseable"
        )
    if {"source", "detail-type", "detail"} <= event.keys():
        _check_event_fields(event)
        entry: dict[str, Any] = {
            "Source": event["source"],
            "DetailType": event["detail-type"],
            "Detail": json.dumps(event["detail"]),
            "EventBusName": bus,
        }
        if event.get("resources"):
            entry["Resources"] = event["resources"]
    else:
        entry = {
            "Source": "retry-worker.replay",
            "DetailType": "Replayed message",
            "Detail": body,
            "EventBusName": bus,
        }
    size = events_entry_size(entry)
    if size > EVENTS_MAX_ENTRY_BYTES:
        raise too_large(size, EVENTS_MAX_ENTRY_BYTES, "EventBridge entry")
    return entry


def traced(entry: dict[str, Any], trace_header: str | None) -> dict[str, Any]:
    """The entry with the DLQ message's X-Ray trace header (`TraceHeader`), when it had one:
    the event joins the trace that failed (EventBridge's DLQ keeps it on the SQS message, not
    in the event). It is not counted in the entry's size."""
    return {**entry, "TraceHeader": trace_header} if trace_header else entry


def _check_event_fields(event: dict[str, Any]) -> None:
    """Fields of the wrong type would fail the whole PutEvents request (a serialisation
    error, not a per-entry one) and every batch-mate with it: this message's problem alone,
    parked `unparseable`."""
    resources = event.get("resources") or []
    wrong = [
        name
        for name, ok in (
            ("source", isinstance(event["source"], str) and event["source"]),
            ("detail-type", isinstance(event["detail-type"], str) and event["detail-type"]),
            (
                "resources",
                isinstance(resources, list) and all(isinstance(r, str) for r in resources),
            ),
        )
        if not ok
    ]
    if wrong:
        raise DeliveryError(
            ErrorKind.PERMANENT,
            "InvalidEventBody",
            f"{', '.join(wrong)}: not as EventBridge takes them (strings, a list of strings)",
            park_reason="unparseable",
        )


class EventBridgePublisher(HandOff):
    service = "events"
    operation = "PutEvents"
    one_per_call = False

    def __init__(self, client: Client, settings: EventBridgeTarget) -> None:
        self._client = client
        self._bus = settings.event_bus
        self.name = short_name(settings.event_bus)
        self.hands_off = True

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        return await deliver_batched(
            batch,
            lambda _, d: traced(put_events_entry(d.body, self._bus), trace_of(d, 500)),
            self._put,
            size_of=events_entry_size,
            max_bytes=EVENTS_MAX_BATCH_BYTES,
        )

    async def _put(self, entries: list[dict[str, Any]]) -> dict[int, DeliveryError]:
        response = await self._client.put_events(Entries=entries)
        failed = {}
        for position, outcome in enumerate(response.get("Entries", [])):
            code = outcome.get("ErrorCode")
            if code:
                kind = RETRYABLE_ENTRY_CODES.get(code) or kind_of(code)
                if kind is ErrorKind.UNKNOWN:
                    kind = ErrorKind.PERMANENT  # per-entry codes other than the two are final
                failed[position] = DeliveryError(kind, code, outcome.get("ErrorMessage", ""))
        return failed
