"""EventBridge target: PutEvents to a bus, up to 10 entries a call, every entry's result read.

A body that is an EventBridge event (an EventBridge DLQ holds the event its target failed to
get) is sent with its own source, detail-type, detail and resources; any other JSON object
becomes the detail of a `retry-worker.replay` event. Entries over 256 KB are parked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from worker.aws.clients import Client
from worker.aws.errors import classify, kind_of
from worker.core.errors import DeliveryError, ErrorKind
from worker.settings import EventBridgeTarget
from worker.targets.base import Delivery, HandOff, Result, short_name

MAX_ENTRY_BYTES = 256 * 1024
BATCH = 10
RETRYABLE_ENTRY_CODES = {
    "ThrottlingException": ErrorKind.THROTTLED,
    "InternalFailure": ErrorKind.RETRYABLE,
}


def put_events_entry(body: str, bus: str) -> dict[str, Any]:
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise DeliveryError(
            ErrorKind.PERMANENT, "InvalidEventBody", "not JSON", park_reason="unparseable"
        ) from exc
    if not isinstance(event, dict):
        raise DeliveryError(
            ErrorKind.PERMANENT, "InvalidEventBody", "not a JSON object", park_reason="unparseable"
        )
    if {"source", "detail-type", "detail"} <= event.keys():
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
    if len(json.dumps(entry).encode("utf-8")) > MAX_ENTRY_BYTES:
        raise DeliveryError(
            ErrorKind.PERMANENT, "PayloadTooLarge", "entry over 256 KB", park_reason="too_large"
        )
    return entry


class EventBridgePublisher(HandOff):
    service = "events"
    operation = "PutEvents"

    def __init__(self, client: Client, settings: EventBridgeTarget) -> None:
        self._client = client
        self._bus = settings.event_bus
        self.name = short_name(settings.event_bus)
        self.hands_off = True

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        results: list[Result] = [None] * len(batch)
        ready: list[tuple[int, dict[str, Any]]] = []
        for index, delivery in enumerate(batch):
            try:
                ready.append((index, put_events_entry(delivery.message.body, self._bus)))
            except DeliveryError as exc:
                results[index] = exc
        for start in range(0, len(ready), BATCH):
            chunk = ready[start : start + BATCH]
            try:
                response = await self._client.put_events(Entries=[entry for _, entry in chunk])
            except Exception as exc:  # noqa: BLE001 - every entry of the call failed alike
                for index, _ in chunk:
                    results[index] = classify(exc)
                continue
            for (index, _), outcome in zip(chunk, response.get("Entries", []), strict=False):
                code = outcome.get("ErrorCode")
                if code:
                    kind = RETRYABLE_ENTRY_CODES.get(code) or kind_of(code)
                    if kind is ErrorKind.UNKNOWN:
                        kind = ErrorKind.PERMANENT  # per-entry codes other than the two are final
                    results[index] = DeliveryError(kind, code, outcome.get("ErrorMessage", ""))
        return results
