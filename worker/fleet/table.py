"""The coordination table (DynamoDB): the only code that knows its item layout.

One table per deployment: partition key `pk`, sort key `sk` (strings), TTL attribute
`expires_at` (epoch seconds). Items:

- `fleet` / `member#<replica>`: `seq` (bumped every heartbeat);
- `fleet` / `breaker#<target>`: `gen` (bumped by every publication), `is_open`, `open_until`,
  `trips`, `by`, and the probe lease `prober`, `probe_until`;
- `loop#<fingerprint>` / `loop`: `ids` (a string set of the DLQ message ids that carried the
  payload), `first_seen`;
- `keeper#<parking queue URL>` / `keeper`: the keeper's lease, `holder` and `held_until`.

The members and the breakers share one partition so that a heartbeat is two requests: one
write (the replica's own item) and one Query (everything the replica needs to know). Nothing
here relies on TTL deletion, which DynamoDB does lazily (up to days later): every reader checks
the times itself; TTL only keeps the table small.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.aws.clients import Client
from worker.aws.errors import error_code
from worker.core.membership import BreakerNote

FLEET = "fleet"
MEMBER = "member#"
BREAKER = "breaker#"
KEEPER = "keeper#"
MEMBER_TTL_SLACK_SECONDS = 60.0  # past 3 heartbeats, before TTL may delete a member's item
STALE_MEMBER_SECONDS = 600.0  # an item this far past its expiry is ignored (a dead replica)
BREAKER_TTL_SECONDS = 7 * 86400.0  # a breaker item outlives its last change by a week
CONDITION_FAILED = "ConditionalCheckFailedException"


def _n(value: float) -> dict[str, str]:
    return {"N": repr(round(value, 3))}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


@dataclass(frozen=True)
class FleetView:
    counters: dict[str, int]  # member -> heartbeat counter
    breakers: dict[str, BreakerNote]  # target key -> note


class CoordinationTable:
    def __init__(
        self, client: Client, table: str, *, wall: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self.table = table
        self._wall = wall

    def _key(self, pk: str, sk: str) -> dict[str, Any]:
        return {"pk": _s(pk), "sk": _s(sk)}

    async def beat(self, me: str, heartbeat_seconds: float) -> None:
        expires = self._wall() + 3 * heartbeat_seconds + MEMBER_TTL_SLACK_SECONDS
        await self._client.update_item(
            TableName=self.table,
            Key=self._key(FLEET, MEMBER + me),
            UpdateExpression="ADD seq :one SET expires_at = :e",
            ExpressionAttributeValues={":one": {"N": "1"}, ":e": {"N": str(int(expires))}},
        )

    async def leave(self, me: str) -> None:
        await self._client.delete_item(TableName=self.table, Key=self._key(FLEET, MEMBER + me))

    async def read(self) -> FleetView:
        counters: dict[str, int] = {}
        breakers: dict[str, BreakerNote] = {}
        stale_before = self._wall() - STALE_MEMBER_SECONDS
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": _s(FLEET)},
        }
        while True:
            page = await self._client.query(**request)
            for item in page.get("Items", []):
                sk = item["sk"]["S"]
                if sk.startswith(MEMBER) and float(item["expires_at"]["N"]) >= stale_before:
                    counters[sk.removeprefix(MEMBER)] = int(item["seq"]["N"])
                elif sk.startswith(BREAKER):
                    note = _note(sk.removeprefix(BREAKER), item)
                    breakers[note.key] = note
            if "LastEvaluatedKey" not in page:
                return FleetView(counters, breakers)
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def publish(self, key: str, me: str, *, open_until: float | None, trips: int) -> int:
        """Publish a breaker opened until `open_until` (wall clock), or closed (None), and
        end any probe lease; returns the new generation. A close is only published by the
        lease holder or when nobody holds it; an open never shortens a published one (the
        condition fails: the caller adopts the longer one on its next heartbeat)."""
        values: dict[str, Any] = {
            ":one": {"N": "1"},
            ":open": {"BOOL": open_until is not None},
            ":until": _n(open_until or 0.0),
            ":trips": {"N": str(trips)},
            ":me": _s(me),
            ":e": {"N": str(int(max(open_until or 0.0, self._wall()) + BREAKER_TTL_SECONDS))},
        }
        request: dict[str, Any] = {
            "TableName": self.table,
            "Key": self._key(FLEET, BREAKER + key),
            "UpdateExpression": "ADD gen :one SET is_open = :open, open_until = :until, "
            "trips = :trips, #by = :me, expires_at = :e REMOVE prober, probe_until",
            "ExpressionAttributeNames": {"#by": "by"},
            "ExpressionAttributeValues": values,
            "ReturnValues": "UPDATED_NEW",
        }
        if open_until is None:
            request["ConditionExpression"] = "attribute_not_exists(prober) OR prober = :me"
        else:  # never shorten an open another replica published meanwhile
            request["ConditionExpression"] = (
                "attribute_not_exists(open_until) OR is_open = :shut OR open_until < :until"
            )
            values[":shut"] = {"BOOL": False}
        response = await self._client.update_item(**request)
        return int(response["Attributes"]["gen"]["N"])

    async def lease(self, key: str, me: str, seconds: float) -> bool:
        """Take (or renew) the probe lease of a target's breaker: True when this replica
        holds it now, False when another one does."""
        now = self._wall()
        return await self._conditional(
            Key=self._key(FLEET, BREAKER + key),
            UpdateExpression="SET prober = :me, probe_until = :until, "
            "expires_at = if_not_exists(expires_at, :e)",
            ConditionExpression="attribute_not_exists(prober) OR prober = :me "
            "OR probe_until < :now",
            ExpressionAttributeValues={
                ":me": _s(me),
                ":until": _n(now + seconds),
                ":now": _n(now),
                ":e": {"N": str(int(now + BREAKER_TTL_SECONDS))},
            },
        )

    async def keeper_lease(self, queue_url: str, me: str, seconds: float) -> bool:
        """Take (or renew) the lease to keep one parking queue: True when this replica holds
        it now, False while another one does (and renews it)."""
        now = self._wall()
        return await self._conditional(
            Key=self._key(KEEPER + queue_url, "keeper"),
            UpdateExpression="SET holder = :me, held_until = :until, expires_at = :e",
            ConditionExpression="attribute_not_exists(holder) OR holder = :me OR held_until < :now",
            ExpressionAttributeValues={
                ":me": _s(me),
                ":until": _n(now + seconds),
                ":now": _n(now),
                ":e": {"N": str(int(now + seconds + MEMBER_TTL_SLACK_SECONDS))},
            },
        )

    async def keeper_give_up(self, queue_url: str, me: str) -> None:
        """Let the lease go now, if this replica holds it (a replica that cannot keep)."""
        await self._conditional(
            Key=self._key(KEEPER + queue_url, "keeper"),
            UpdateExpression="SET held_until = :zero",
            ConditionExpression="holder = :me",
            ExpressionAttributeValues={":me": _s(me), ":zero": _n(0)},
        )

    async def _conditional(self, **request: Any) -> bool:
        """An UpdateItem with a condition: False when the condition did not hold."""
        try:
            await self._client.update_item(TableName=self.table, **request)
        except Exception as exc:
            if error_code(exc) == CONDITION_FAILED:
                return False
            raise
        return True

    async def count_loop(self, fingerprint: str, message_id: str, window_seconds: float) -> int:
        """Record that `message_id` carried the payload `fingerprint`; returns how many
        distinct DLQ messages carried it within the window (this one included)."""
        now = self._wall()
        key = self._key("loop#" + fingerprint, "loop")
        values = {
            ":id": {"SS": [message_id]},
            ":now": _n(now),
            ":e": {"N": str(int(now + window_seconds))},
        }
        try:
            response = await self._client.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="ADD ids :id SET first_seen = if_not_exists(first_seen, :now), "
                "expires_at = if_not_exists(expires_at, :e)",
                ConditionExpression="attribute_not_exists(expires_at) OR expires_at > :now",
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",  # the whole set, also when this id was in it
            )
        except Exception as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise
            # The window has passed (TTL had not deleted the item yet): start a new one.
            await self._client.put_item(
                TableName=self.table,
                Item={
                    **key,
                    "ids": values[":id"],
                    "first_seen": _n(now),
                    "expires_at": values[":e"],
                },
            )
            return 1
        return len(response["Attributes"]["ids"]["SS"])


def _note(key: str, item: dict[str, Any]) -> BreakerNote:
    prober = item.get("prober", {}).get("S")
    return BreakerNote(
        key=key,
        generation=int(item.get("gen", {"N": "0"})["N"]),
        is_open=bool(item.get("is_open", {}).get("BOOL", False)),
        open_until=float(item.get("open_until", {"N": "0"})["N"]),
        trips=int(item.get("trips", {"N": "0"})["N"]),
        prober=prober,
        probe_until=float(item.get("probe_until", {"N": "0"})["N"]) if prober else 0.0,
    )
