"""Two shortcuts in moto's SQS backend that answer exactly as moto does, without its
quadratic cost (moto 5.2):

- every message a ReceiveMessage returns asked GetQueueAttributes for the queue's retention,
  and every attribute built the whole attribute dict, counting every message three times
  (visible, in flight, delayed): a receive from a queue of n messages cost O(n²);
- GetQueueAttributes built that whole dict up to three times per attribute asked for;
- every SendMessage built it too (up to three times, to read ContentBasedDeduplication):
  filling a queue of n messages cost O(n²) — 2,000 parked messages took a minute;
- every ReceiveMessage listed the visible messages reading the clock twice per message (a
  datetime round trip each): the clock is read once per listing here.

With them the emulator spends its time on requests, not on counting: the chaos test's
emulator CPU, most of `make test`'s, falls by about half.

And one fidelity fix: moto's server answers requests on several threads, and its DynamoDB
conditional writes check, then write, without a lock — two replicas asking for the same probe
lease within a few milliseconds could both get it, which DynamoDB never allows. Its item writes
are serialised here, so a condition is checked and applied at once, as in DynamoDB. Its SQS
delete rebuilds a queue's message list without the queue's lock: two deletes at once on one
queue could put back a message the other had just deleted (found by the soak: delivered
messages reappeared a visibility timeout later), and a send meanwhile could vanish. A delete
takes the queue's lock here, as its sends do. Two more fidelity fixes, for FIFO order, are in
`fidelity.py`.

Applied once, in this process (the emulator runs in a thread of the process that starts it)."""

from __future__ import annotations

import threading
from typing import Any

from worker.emulator import fidelity, redrive

MARK = "_retry_worker_speedups"


def apply() -> None:
    from moto.core.utils import unix_time
    from moto.sqs.models import SQSBackend

    if getattr(SQSBackend, MARK, False):
        return

    original = SQSBackend.get_queue_attributes

    def get_queue_attributes(
        self: Any, queue_name: str, attribute_names: list[str]
    ) -> dict[str, Any]:
        if not attribute_names or "All" in attribute_names:
            return original(self, queue_name, attribute_names)
        queue = self.get_queue(queue_name)  # raises moto's own QueueDoesNotExist
        valid = ["All", *queue.BASE_ATTRIBUTES, *queue.FIFO_ATTRIBUTES, *queue.KMS_ATTRIBUTES]
        if any(name not in valid for name in attribute_names):
            return original(self, queue_name, attribute_names)  # moto raises its own error
        everything = queue.attributes  # built once
        return {
            name: everything[name]
            for name in attribute_names
            if name in everything and everything[name] is not None
        }

    def retained(self: Any, queue_name: str, message: Any) -> bool:
        period = self.get_queue(queue_name).message_retention_period
        return bool(period + message.sent_timestamp / 1000 > unix_time())

    _serialise_item_writes()
    _serialise_deletes()
    fidelity.apply()
    redrive.apply()
    _cheap_attributes_while_sending()
    _one_clock_per_listing()
    setattr(SQSBackend, "get_queue_attributes", get_queue_attributes)  # noqa: B010
    setattr(SQSBackend, "is_message_valid_based_on_retention_period", retained)  # noqa: B010
    setattr(SQSBackend, MARK, True)


def _serialise_item_writes() -> None:
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.Lock()
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        original = getattr(DynamoDBBackend, name, None)
        if original is None:  # pragma: no cover - another moto version
            continue

        def locked(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return _original(self, *args, **kwargs)

        setattr(DynamoDBBackend, name, locked)


def _serialise_deletes() -> None:
    from moto.sqs.models import Queue

    original = Queue.delete_message

    def delete_message(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:  # a Condition on an RLock: sends and long polls use it
            original(self, receipt_handle)

    setattr(Queue, "delete_message", delete_message)  # noqa: B010


def _cheap_attributes_while_sending() -> None:
    """While a message is sent (on this thread), a queue's attributes are read only for
    ContentBasedDeduplication: its attribute map skips the three message counts then."""
    from moto.sqs.models import Queue, SQSBackend

    sending = threading.local()
    counts = {
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesDelayed",
        "ApproximateNumberOfMessagesNotVisible",
    }
    full = vars(Queue)["attributes"].fget

    def attributes(self: Any) -> dict[str, Any]:
        if not getattr(sending, "active", False):
            return full(self)  # type: ignore[no-any-return]
        names = [n for n in self.BASE_ATTRIBUTES if n not in counts]
        if self.fifo_queue:
            names += self.FIFO_ATTRIBUTES
        result: dict[str, Any] = {}
        for name in names:
            value = getattr(self, camelcase_to_underscores(name))
            result[name] = str(value).lower() if isinstance(value, bool) else value
        return result

    original = SQSBackend.send_message

    def send_message(self: Any, *args: Any, **kwargs: Any) -> Any:
        sending.active = True
        try:
            return original(self, *args, **kwargs)
        finally:
            sending.active = False

    from moto.core.utils import camelcase_to_underscores

    setattr(Queue, "attributes", property(attributes))  # noqa: B010
    setattr(SQSBackend, "send_message", send_message)  # noqa: B010


def _one_clock_per_listing() -> None:
    """Queue.messages and the in-flight and delayed counts, as moto computes them (visible:
    now > visible_at; delayed: now < delayed_until), with one reading of the clock."""
    from moto.core.utils import unix_time_millis
    from moto.sqs.models import Queue

    def messages(self: Any) -> list[Any]:
        now = unix_time_millis()
        return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]

    def delayed(self: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in self._messages if now < m.delayed_until)

    def not_visible(self: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in self._messages if not now > m.visible_at)

    setattr(Queue, "messages", property(messages))  # noqa: B010
    setattr(Queue, "approximate_number_of_messages_delayed", property(delayed))  # noqa: B010
    setattr(Queue, "approximate_number_of_messages_not_visible", property(not_visible))  # noqa: B010
