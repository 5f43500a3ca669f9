"""Business rules too rich for a JMESPath `when`: park orders from a blocked customer, and
move an old payload to the v2 shape before delivering it.

    queues:
      orders:
        hook: acme_hooks.orders:decide
"""

from __future__ import annotations

import json

from worker.hooks import Deliver, Message, Park

BLOCKED = frozenset({"c-blocked"})


def decide(message: Message) -> Deliver | Park | None:
    body = message["body"]
    if not isinstance(body, dict):
        return Park("not_json", "NotJson")
    if body.get("customerId") in BLOCKED:
        return Park("blocked_customer")
    if "customerId" in body and "customer" not in body:
        upgraded = {k: v for k, v in body.items() if k != "customerId"}
        upgraded["customer"] = {"id": body["customerId"]}
        return Deliver(payload=json.dumps(upgraded, separators=(",", ":")))
    return None
