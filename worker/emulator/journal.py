"""What the fault proxy saw: every call counted, the bodies and headers asked, when each came
and from whom (the SigV4 access key: replicas started with their own keys tell apart), what the
emulator accepted — and the questions tests ask of it. Written from the proxy's thread, read
from the tests': every access holds the lock."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

_ACCESS_KEY = re.compile(r"Credential=([^/]+)/")
# A client may say when it sent a request, in its `time.monotonic()` (one clock for every
# process of one Linux host and time namespace: the proxy binds to loopback): the journal
# records that rather than when the proxy got to read it. A stamp later than the proxy's now
# cannot be one (another clock): now is recorded instead.
SENT_AT = "X-Sent-At"


def sent_at(headers: Mapping[str, str]) -> float:
    """When the request left its client, if it says so and makes sense; else now."""
    now = time.monotonic()
    try:
        sent = float(headers.get(SENT_AT, ""))
    except ValueError:
        return now
    return sent if 0 < sent <= now else now


def access_key(authorization: str) -> str:
    match = _ACCESS_KEY.search(authorization)
    return match.group(1) if match else ""


class Journal:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[tuple[str, str]] = Counter()
        # JSON request bodies, in order (for tests that check what was asked of AWS)
        self.journal: list[tuple[str, str, Any]] = []
        # (service, operation, the X-Amz-* request headers): what travels outside the body
        self.header_journal: list[tuple[str, str, dict[str, str]]] = []
        self.keep_journal = True
        self.upstream_errors: list[tuple[str, str, str]] = []
        # (monotonic: when sent, service, operation, path, access key)
        self.arrivals: list[tuple[float, str, str, str, str]] = []
        # requests being answered now, and the most there were at once, by (service, operation)
        self.in_flight: Counter[tuple[str, str]] = Counter()
        self.peak: Counter[tuple[str, str]] = Counter()
        # (service, operation, JSON body) of forwarded requests the target accepted
        self.accepted: list[tuple[str, str, Any]] = []

    def forget(self) -> None:
        """Everything seen so far (requests in flight stay counted until they end)."""
        with self._lock:
            self.calls.clear()
            self.journal.clear()
            self.header_journal.clear()
            self.accepted.clear()
            self.arrivals.clear()
            self.peak.clear()
            self.upstream_errors.clear()
            self.keep_journal = True

    def accepted_requests(self, service: str, operation: str) -> list[Any]:
        """Bodies of requests the emulator answered with success (no injected failure)."""
        with self._lock:
            return [b for s, o, b in self.accepted if s == service and o == operation]

    def requests(self, service: str, operation: str) -> list[Any]:
        with self._lock:
            return [b for s, o, b in self.journal if s == service and o == operation]

    def times(self, service: str, operation: str, path: str = "") -> list[float]:
        """When each call was sent (its `X-Sent-At` stamp, else when it arrived; monotonic),
        in that order; `path`: only requests whose path contains it (a Lambda function's
        name)."""
        return [t for t, _ in self.callers(service, operation, path)]

    def callers(self, service: str, operation: str, path: str = "") -> list[tuple[float, str]]:
        """(when, access key) of each call, in the order they were sent."""
        with self._lock:
            return sorted(
                (t, who)
                for t, s, o, p, who in self.arrivals
                if s == service and o == operation and path in p
            )

    def count(self, service: str | None = None, operation: str | None = None) -> int:
        with self._lock:
            return sum(
                n
                for (s, o), n in self.calls.items()
                if (service is None or s == service) and (operation is None or o == operation)
            )

    def headers(self, service: str, operation: str) -> list[dict[str, str]]:
        with self._lock:
            return [h for s, o, h in self.header_journal if s == service and o == operation]
