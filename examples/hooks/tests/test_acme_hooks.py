"""The example hooks, tested as any hook should be: plain functions over a message view."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from acme_hooks import downstream, orders

from worker.hooks import Defer, Deliver, Park


def view(body: Any) -> dict[str, Any]:
    return {"queue": "orders", "message_id": "m", "attempt": 1, "body": body, "text": ""}


def test_a_blocked_customer_is_parked():
    assert orders.decide(view({"customerId": "c-blocked"})) == Park("blocked_customer")


def test_an_old_payload_is_upgraded():
    decision = orders.decide(view({"customerId": "c-1", "total": 3}))
    assert isinstance(decision, Deliver)
    assert json.loads(decision.payload or "") == {"total": 3, "customer": {"id": "c-1"}}


def test_a_current_payload_goes_on_unchanged():
    assert orders.decide(view({"customer": {"id": "c-1"}})) is None
    assert orders.decide(view(None)) == Park("not_json", "NotJson")


@pytest.fixture
def health(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    state = {"status": 503}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(state["status"])
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("ACME_LEDGER_HEALTH_URL", f"http://127.0.0.1:{server.server_port}/")
    downstream.forget()
    yield state
    server.shutdown()
    server.server_close()
    downstream.forget()


def test_deferred_while_the_ledger_is_down_then_delivered(health: dict[str, int]):
    assert downstream.wait_for_ledger(view({})) == Defer(300, "ledger_down")
    health["status"] = 200
    downstream.forget()
    assert downstream.wait_for_ledger(view({})) is None


def test_the_ledgers_answer_is_cached(health: dict[str, int]):
    assert downstream.wait_for_ledger(view({})) == Defer(300, "ledger_down")
    health["status"] = 200  # not asked again within the cache time
    assert downstream.wait_for_ledger(view({})) == Defer(300, "ledger_down")


def test_an_unreachable_ledger_is_down(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ACME_LEDGER_HEALTH_URL", "http://127.0.0.1:9/")
    downstream.forget()
    assert isinstance(downstream.wait_for_ledger(view({})), Defer)
    downstream.forget()
