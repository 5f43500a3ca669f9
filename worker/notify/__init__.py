"""Notifications (SPEC.md, Notifications): digests of parked and newly arrived messages, sent
to SNS, EventBridge or a webhook without ever holding the queue loop."""

from __future__ import annotations

from worker.notify.build import open_notifier
from worker.notify.notifier import Notifier

__all__ = ["Notifier", "open_notifier"]
