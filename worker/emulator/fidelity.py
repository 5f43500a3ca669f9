"""Where moto's SQS breaks FIFO order and SQS does not (moto 5.2), found by the chaos test once
answers could be lost and kills came mid-settle:

- **Receive**: moto decides which FIFO groups are in flight once per call, and counts a message
  whose visibility ran out (its consumer died) as in flight until its loop passes it. With
  several such messages in one group it skips the first ones as "group in flight" and returns
  a later one ahead of them; and a long poll keeps its first answer while another receive takes
  a group's head meanwhile. Here each pass over the queue, under the queue's lock, counts a
  group in flight exactly while one of its messages is hidden, as SQS does.
- **Receipt handles**: moto takes any handle a message ever had, and re-hides a visible message
  on a visibility change without counting it in flight (which unlocks its group while it is
  hidden). SQS acts only on the handle of a message's latest receive: with an older one a
  visibility change is refused (`InvalidParameterValue`, "Message does not exist or is not
  available for visibility timeout change") and a delete answers success and deletes nothing
  (DeleteMessage's reference: "otherwise, the request succeeds, but the message will not be
  deleted"); on a FIFO queue a delete with an expired handle is refused ("The receipt handle
  has expired"). A visibility change of a message no longer in flight answers success and
  changes nothing (as AWS does). Batch calls report each entry's refusal.

And where its SendMessageBatch does not: each entry's `MessageSystemAttributes` (the X-Ray
trace header) is kept, as SendMessage keeps it.

And where its Lambda does not: without Docker, moto answers an invocation of any function name,
one that was never created too (a dry run included). Lambda answers
`ResourceNotFoundException`; here the function is looked up first, as there.

Applied by `speedups.apply()`, once, in the process that runs the emulator."""

from __future__ import annotations

import threading
from copy import deepcopy
from typing import Any


def apply() -> None:
    _fifo_receive()
    _receipt_handles()
    _lambda_functions_exist()
    _batch_keeps_system_attributes()


_sending = threading.local()  # the system attributes of the batch entries being sent


def _batch_keeps_system_attributes() -> None:
    """moto's SendMessageBatch drops each entry's `MessageSystemAttributes` (SendMessage
    keeps them): an X-Ray trace header sent in a batch was gone when the message was read."""
    from moto.sqs.models import SQSBackend

    single = SQSBackend.send_message
    batch = SQSBackend.send_message_batch

    def send_message(self: Any, *args: Any, **kwargs: Any) -> Any:
        pending = getattr(_sending, "pending", None)
        if pending is not None and kwargs.get("system_attributes") is None:
            kwargs["system_attributes"] = next(pending, None)
        return single(self, *args, **kwargs)

    def send_message_batch(self: Any, queue_name: str, entries: dict[str, Any]) -> Any:
        # moto sends the entries one by one, in order, on this thread
        _sending.pending = iter([e.get("MessageSystemAttributes") for e in entries.values()])
        try:
            return batch(self, queue_name, entries)
        finally:
            _sending.pending = None

    setattr(SQSBackend, "send_message", send_message)  # noqa: B010
    setattr(SQSBackend, "send_message_batch", send_message_batch)  # noqa: B010


def _lambda_functions_exist() -> None:
    from moto.awslambda_simple.models import LambdaSimpleBackend

    simple = LambdaSimpleBackend.invoke

    def invoke(self: Any, function_name: str, qualifier: Any, *args: Any) -> Any:
        self.get_function(function_name, qualifier)  # UnknownFunctionException: a 404
        return simple(self, function_name, qualifier, *args)

    setattr(LambdaSimpleBackend, "invoke", invoke)  # noqa: B010


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
            if not backend.is_message_valid_based_on_retention_period(queue.name, message):
                queue._messages.remove(message)  # past its retention: SQS has dropped it
                continue
            queue.pending_messages.add(message)
            message.mark_received(visibility_timeout=visibility)
            copy = deepcopy(message)
            _filter_message_attributes(copy, names)
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
            # Under the queue's lock too: moto's receive iterates the in-flight set while
            # another thread's delete changes it ("Set changed size during iteration", a 500
            # SQS never gives). Its long poll waits on this same lock's condition, releasing it.
            with queue._messages_lock:
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


STALE_CHANGE = (
    "Value {} for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not "
    "available for visibility timeout change."
)


def _message_of(queue: Any, receipt_handle: str) -> Any:
    return next((m for m in queue._messages if m.had_receipt_handle(receipt_handle)), None)


def _per_entry(single: Any, fields: tuple[str, ...]) -> Any:
    """A *Batch call made of the single call, each entry's refusal reported as its own."""
    from moto.sqs.exceptions import SQSException

    def batch(
        self: Any, queue_name: str, entries: list[dict[str, Any]]
    ) -> tuple[list[str], list[dict[str, Any]]]:
        success, errors = [], []
        for entry in entries:
            try:
                single(self, queue_name, *(entry[f] for f in fields))
            except (SQSException, TypeError, ValueError) as exc:
                code = exc.code if isinstance(exc, SQSException) else "InvalidParameterValue"
                errors.append({"Id": entry["Id"], "SenderFault": True, "Code": code, "Message": ""})
            else:
                success.append(entry["Id"])
        return success, errors

    return batch


def _receipt_handles() -> None:
    from moto.sqs.exceptions import InvalidParameterValue
    from moto.sqs.models import SQSBackend

    change, delete = SQSBackend.change_message_visibility, SQSBackend.delete_message

    def change_message_visibility(
        self: Any, queue_name: str, receipt_handle: str, visibility_timeout: int
    ) -> None:
        queue = self.get_queue(queue_name)
        with queue._messages_lock:
            message = _message_of(queue, receipt_handle)
            if message is not None and message.receipt_handle != receipt_handle:
                raise InvalidParameterValue(STALE_CHANGE.format(receipt_handle))
            if message is not None and message.visible:
                return  # not in flight: AWS answers OK and changes nothing
            change(self, queue_name, receipt_handle, visibility_timeout)

    def delete_message(self: Any, queue_name: str, receipt_handle: str) -> None:
        queue = self.get_queue(queue_name)
        with queue._messages_lock:
            message = _message_of(queue, receipt_handle)
            if (
                message is not None
                and queue.fifo_queue
                and (message.receipt_handle != receipt_handle or message.visible)
            ):
                raise InvalidParameterValue("The receipt handle has expired.")
            if message is not None and message.receipt_handle != receipt_handle:
                return  # "the request succeeds, but the message will not be deleted"
            delete(self, queue_name, receipt_handle)

    def change_one(self: Any, queue_name: str, handle: str, timeout: Any) -> None:
        self.change_message_visibility(queue_name, handle, int(timeout))

    setattr(SQSBackend, "change_message_visibility", change_message_visibility)  # noqa: B010
    setattr(SQSBackend, "delete_message", delete_message)  # noqa: B010
    setattr(  # noqa: B010
        SQSBackend,
        "change_message_visibility_batch",
        _per_entry(change_one, ("ReceiptHandle", "VisibilityTimeout")),
    )
    setattr(  # noqa: B010
        SQSBackend,
        "delete_message_batch",
        _per_entry(SQSBackend.delete_message, ("ReceiptHandle",)),
    )
