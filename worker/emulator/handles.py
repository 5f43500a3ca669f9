"""Receipt handles as SQS treats them. The emulator accepts any handle a message ever had; SQS
acts only on the handle of the message's latest receive. With a stale one (the message was
received again since), `ChangeMessageVisibility` is refused (`ReceiptHandleIsInvalid`) and
`DeleteMessage` answers success and deletes nothing (SQS's DeleteMessage reference: "otherwise,
the request succeeds, but the message will not be deleted"). The fault proxy applies this to
every request, as it applies Lambda's refusal of a non-JSON payload."""

from __future__ import annotations

import json
import threading
from typing import Any

from aiohttp import web

from worker.emulator.rules import Forward, Rule, error_response, failure, partial_batch

STALE = "ReceiptHandleIsInvalid"
OPERATIONS = frozenset(
    {
        "ChangeMessageVisibility",
        "ChangeMessageVisibilityBatch",
        "DeleteMessage",
        "DeleteMessageBatch",
    }
)


class Handles:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._message_of: dict[str, str] = {}  # handle -> message id
        self._latest: dict[str, str] = {}  # message id -> the handle of its latest receive

    def clear(self) -> None:
        with self._lock:
            self._message_of.clear()
            self._latest.clear()

    def received(self, payload: bytes) -> None:
        """Note the handles a ReceiveMessage answer gave out."""
        try:
            messages = json.loads(payload).get("Messages", [])
        except ValueError:
            return
        with self._lock:
            for message in messages:
                handle, message_id = message["ReceiptHandle"], message["MessageId"]
                self._message_of[handle] = message_id
                self._latest[message_id] = handle

    def stale(self, handle: str) -> bool:
        with self._lock:
            message_id = self._message_of.get(handle)
            return message_id is not None and self._latest.get(message_id) != handle

    async def answer(
        self, forward: Forward, request: web.Request, operation: str, body: bytes
    ) -> web.Response | None:
        """SQS's answer to a request naming stale handles; None: forward it as it is."""
        if operation not in OPERATIONS:
            return None
        data: dict[str, Any] = json.loads(body) if body[:1] == b"{" else {}
        deleting = operation.startswith("Delete")
        if not operation.endswith("Batch"):
            if not self.stale(data.get("ReceiptHandle", "")):
                return None
            if deleting:
                return web.json_response({}, content_type="application/x-amz-json-1.0")
            return error_response(Rule("sqs", status=400, code=STALE), "stale receipt handle")
        answers = {
            e["Id"]: {"Id": e["Id"]} if deleting else failure(e["Id"], STALE, sender_fault=True)
            for e in data.get("Entries", [])
            if self.stale(e.get("ReceiptHandle", ""))
        }
        if not answers:
            return None
        return await partial_batch(forward, request, body, answers)
