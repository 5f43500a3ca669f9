"""Where moto's SQS breaks FIFO order and SQS does not (moto 5.2), found by the chaos test once
answers could be lost and kills came mid-settle:

- **Receive**: moto decides which FIFO groups are in flight once per call, and counts a message
  whose visibility ran out (its consumer died) as in flight until its loop passes it. With
  several such messages in one group it skips the first ones as "group in flight" and returns
  a later one ahead of them; and a long poll keeps its first answer while another receive takes
  a group's head meanwhile. Here each pass over the queue, under the queue's lock, counts a
  group in flight exactly while one of its messages is hidden, as SQS does.
- **Visibility of a message not in flight**: moto hides a visible message again without
  counting it in flight, which unlocks its group while it is hidden. SQS refuses the change
  (`MessageNotInflight`); so does this.

Applied by `speedups.apply()`, once, in the process that runs the emulator."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

NOT_INFLIGHT = "AWS.SimpleQueueService.MessageNotInflight"


def apply() -> None:
    _fifo_receive()
    _refuse_visibility_of_visible_messages()


def _redriven(queue: Any, message: Any) -> bool:
    """Moved to the queue's DLQ, as moto's own receive does past maxReceiveCount."""
    redrive = queue.redrive_policy
    if queue.dead_letter_queue is None or not redrive:
        return False
    if message.approximate_receive_count < redrive["maxReceiveCount"]:
        return False
    queue._messages.remove(message)
    queue.dead_letter_queue.add_message(message)
    return True


def _one_pass(backend: Any, queue: Any, count: int, visibility: int, names: list[str]) -> list[Any]:
    """One look at a FIFO queue, under its lock: a group is in flight while one of its
    messages is hidden; a message whose visibility ran out no longer counts."""
    from moto.sqs.models import _filter_message_attributes

    with queue._messages_lock:
        hidden = [m for m in queue._pending_messages if not m.visible]
        queue._pending_messages.intersection_update(hidden)
        in_flight = {m.group_id for m in hidden}
        result: list[Any] = []
        for message in queue.messages:  # visible and not delayed, in the queue's order
            if message.group_id in in_flight or _redriven(queue, message):
                continue
            queue.pending_messages.add(message)
            message.mark_received(visibility_timeout=visibility)
            copy = deepcopy(message)
            _filter_message_attributes(copy, names)
            if not backend.is_message_valid_based_on_retention_period(queue.name, message):
                break
            result.append(copy)
            if len(result) >= count:
                break
        return result


def _fifo_receive() -> None:
    from moto.core.utils import unix_time
    from moto.sqs.models import SQSBackend

    original = SQSBackend.receive_message

    def receive_message(
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> list[Any]:
        queue = self.get_queue(queue_name)
        if not queue.fifo_queue:
            return original(
                self,
                queue_name,
                count,
                wait_seconds_timeout,
                visibility_timeout,
                message_attribute_names,
            )
        end = unix_time() + wait_seconds_timeout
        while True:
            result = _one_pass(
                self, queue, count, visibility_timeout, message_attribute_names or []
            )
            left = end - unix_time()
            if result or not wait_seconds_timeout or left <= 0:
                return result
            # Woken by a send; a hidden message becoming visible is seen within 0.1 s.
            with queue._messages_lock:
                queue._messages_lock.wait(timeout=min(0.1, left))

    setattr(SQSBackend, "receive_message", receive_message)  # noqa: B010


def _refuse_visibility_of_visible_messages() -> None:
    from moto.sqs.exceptions import ReceiptHandleIsInvalid, SQSException
    from moto.sqs.models import SQSBackend

    class MessageNotInflight(SQSException):
        def __init__(self) -> None:
            super().__init__(NOT_INFLIGHT, "The message referred to is not in flight.")

    original = SQSBackend.change_message_visibility

    def change_message_visibility(
        self: Any, queue_name: str, receipt_handle: str, visibility_timeout: int
    ) -> None:
        queue = self.get_queue(queue_name)
        with queue._messages_lock:
            for message in queue._messages:
                if message.had_receipt_handle(receipt_handle):
                    if message.visible:
                        raise MessageNotInflight()
                    break
            original(self, queue_name, receipt_handle, visibility_timeout)

    def change_message_visibility_batch(
        self: Any, queue_name: str, entries: list[dict[str, Any]]
    ) -> tuple[list[str], list[dict[str, Any]]]:
        success, errors = [], []
        for entry in entries:
            try:
                self.change_message_visibility(
                    queue_name, entry["ReceiptHandle"], int(entry["VisibilityTimeout"])
                )
            except (ReceiptHandleIsInvalid, MessageNotInflight) as exc:
                code = NOT_INFLIGHT if isinstance(exc, MessageNotInflight) else exc.code
                errors.append({"Id": entry["Id"], "SenderFault": True, "Code": code, "Message": ""})
            else:
                success.append(entry["Id"])
        return success, errors

    setattr(SQSBackend, "change_message_visibility", change_message_visibility)  # noqa: B010
    setattr(SQSBackend, "change_message_visibility_batch", change_message_visibility_batch)  # noqa: B010
