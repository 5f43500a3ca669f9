"""`retry-worker demo`: the real daemon against an embedded local AWS emulator.

Starts moto on a free loopback port with a fault proxy in front (the `orders` Lambda fails
a quarter of its invocations, `payments` is down for a while, `ledger` always fails; orders
over 100 are parked `manual_review` by a rule, the rest transformed on the way; fulfilment
executions fail at `Ship` until the carrier comes back, then are redriven from there),
creates one DLQ per target kind with realistic failed messages, and runs the same `serve()`
as `retry-worker run` with short backoffs, printing progress every few seconds.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
from aiobotocore.session import get_session
from prometheus_client import CollectorRegistry

from worker.daemon.app import serve, watch_signals
from worker.emulator import MotoServer
from worker.emulator.beside import cli_handoff, console_beside, printing_webhook
from worker.emulator.demo_seed import carrier_returns, seed, trickle
from worker.emulator.proxy import FaultProxy, Rule
from worker.logs import configure_logging
from worker.settings import LoggingSettings, Settings

PROGRESS_EVERY_SECONDS = 3.0


def demo_settings(
    endpoint: str, state_machine_arn: str, notify: dict[str, Any] | None = None
) -> Settings:
    return Settings.model_validate(
        {
            "notify": notify or {},
            "aws": {"endpoint_url": endpoint, "read_timeout_seconds": 10},
            "logging": {"format": "console", "level": "INFO"},
            "shutdown": {"grace_seconds": 5},
            "http": {"host": "127.0.0.1", "port": 0},
            # The parking queue keeps a message 60 s (the least SQS allows): the keeper
            # re-parks what waits there about 25 s after it was parked, and says so.
            "keeper": {"margin_seconds": 30, "interval_seconds": 5},
            "defaults": {
                "concurrency": 5,
                # idle queues are checked every few seconds: the demo keeps moving
                "receive": {
                    "wait_seconds": 1,
                    "visibility_timeout_seconds": 20,
                    "idle_max_interval_seconds": 5,
                },
                "circuit_breaker": {"open_seconds": 3, "max_open_seconds": 12},
                "policy": {
                    "max_attempts": 4,
                    "backoff": {"initial_seconds": 1, "multiplier": 2, "max_seconds": 4},
                    "parking_queue": "retry-parked",
                },
            },
            "queues": {
                "orders": {
                    "name": "orders-dlq",
                    "target": {"kind": "lambda", "function": "orders"},
                    # Decisions (docs/decisions.md): big orders wait for a person; the rest
                    # reach the function marked as replayed.
                    "rules": [
                        {
                            "when": "body.amount > `100`",
                            "action": "park",
                            "reason": "manual_review",
                        }
                    ],
                    "transform": "merge(body, {replayed: `true`})",
                },
                "fulfilment": {
                    "name": "fulfilment-dlq",
                    # Waits for each execution; one that failed is redriven from the state
                    # that failed (`on_failed_execution: redrive`, the default).
                    "target": {
                        "kind": "stepfunctions",
                        "state_machine_arn": state_machine_arn,
                        "wait_for_completion": True,
                    },
                },
                "invoices": {"name": "invoices-dlq", "target": {"kind": "sqs", "source": True}},
                "payments": {
                    "name": "payments-dlq",
                    "target": {"kind": "lambda", "function": "payments"},
                    "policy": {"max_attempts": 8},
                },
                "ledger": {
                    "name": "ledger-dlq",
                    "target": {"kind": "lambda", "function": "ledger"},
                    "policy": {"max_attempts": 3},
                },
            },
        }
    )


def _total(registry: CollectorRegistry, metric: str, **labels: str) -> int:
    total = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return int(total)


def progress(registry: CollectorRegistry) -> dict[str, int]:
    settled = "retry_worker_messages_settled_total"
    decisions = "retry_worker_decisions_total"
    return {
        "received": _total(registry, "retry_worker_messages_received_total"),
        "delivered": _total(registry, settled, action="deleted"),
        "deferred": _total(registry, settled, action="deferred"),
        "parked": _total(registry, settled, action="parked"),
        "in_flight": _total(registry, "retry_worker_inflight_messages"),
        "transformed": _total(registry, decisions, by="transform", action="deliver"),
        "ruled": _total(registry, decisions, by="rule"),
    }


def _line(label: str, counts: dict[str, int]) -> str:
    return f"[demo] {label}: " + " ".join(f"{k}={v}" for k, v in counts.items())


async def _report(registry: CollectorRegistry, started: float) -> None:
    while True:
        await anyio.sleep(PROGRESS_EVERY_SECONDS)
        elapsed = f"{time.monotonic() - started:5.1f}s"
        print(_line(elapsed, progress(registry)), file=sys.stderr, flush=True)


# A line per message, in the daemon's own logs: left out unless --verbose (the progress line
# and the digests say what happens).
PER_MESSAGE = frozenset(
    {"delivered", "deferred", "released", "parked", "rule_matched", "digest_sent"}
)
# Shown once, the first time, as an example of what happens (unless --verbose: every one).
ONCE = frozenset({"execution_redriven", "redrive_refused_started_anew"})


async def _demo(duration: float, console: tuple[str, int], verbose: bool) -> dict[str, int]:
    quiet, once = (frozenset(), frozenset()) if verbose else (PER_MESSAGE, ONCE)
    configure_logging(LoggingSettings(format="console", level="INFO"), quiet=quiet, once=once)
    moto = MotoServer().start()
    proxy = FaultProxy(moto.url, seed=42).start()
    try:
        print(f"[demo] emulator {moto.url}, fault proxy {proxy.url}", file=sys.stderr)
        arn = await seed(get_session(), moto.url)
        print(cli_handoff(demo_settings(moto.url, arn), Path.cwd()), file=sys.stderr, flush=True)
        # `ledger` always fails (its message exhausts its attempts and is parked);
        # `payments` is down for its first 12 calls (its breaker opens, probes, closes);
        # `orders` fails about a quarter of the time (retries with backoff, then succeeds).
        said = {"errorType": "LedgerLocked", "errorMessage": "ledger closed for month-end"}
        proxy.add(Rule("lambda", "Invoke", "function_error", path="/functions/ledger/", extra=said))
        down = Rule("lambda", "Invoke", "error", status=503, code="ServiceException", times=12)
        down.path = "/functions/payments/"
        proxy.add(down)
        flaky = Rule("lambda", "Invoke", "function_error", probability=0.25)
        flaky.path = "/functions/orders/"
        proxy.add(flaky)
        registry = CollectorRegistry()
        stop = anyio.Event()

        async def stop_later() -> None:
            await anyio.sleep(duration)
            stop.set()

        async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
            tg.start_soon(watch_signals, stop)
            tg.start_soon(_report, registry, time.monotonic())
            tg.start_soon(stop_later)
            tg.start_soon(trickle, get_session(), moto.url)
            tg.start_soon(carrier_returns, get_session(), moto.url)
            inbox = await stack.enter_async_context(printing_webhook())
            url = await tg.start(console_beside, demo_settings(proxy.url, arn), console, stop)
            # Digests of what is parked, every 5 s, to a local webhook that prints them.
            notify = {
                "events": ["parked"],
                "window_seconds": 5,
                "console_url": url.rstrip("/"),
                "sinks": [{"webhook": {"url_file": str(inbox), "format": "slack"}}],
            }
            settings = demo_settings(proxy.url, arn, notify)
            print(
                f"[demo] console {url} — open it: the demo's parked messages, by reason "
                "and error; replay one while the demo runs",
                file=sys.stderr,
                flush=True,
            )
            async with anyio.create_task_group() as daemon:
                # The emulator and the proxy run in this process: a connection costs 4
                # descriptors (ours, the proxy's two, the emulator's).
                runtime = await daemon.start(
                    functools.partial(
                        serve,
                        settings,
                        stop,
                        registry=registry,
                        connection_cost=4,
                    )
                )
                base = f"http://127.0.0.1:{runtime.http_port}"
                print(f"[demo] health {base}/readyz, metrics {base}/metrics", file=sys.stderr)
            tg.cancel_scope.cancel()
        return progress(registry)
    finally:
        proxy.stop()
        moto.stop()


def run_demo(duration: float, console: str = "127.0.0.1:8090", *, verbose: bool = False) -> int:
    # The emulator accepts any credentials; never hand it real ones from the environment.
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(var, None)
    os.environ.update(AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo")  # noqa: S106
    host, _, port = console.rpartition(":")
    counts = anyio.run(_demo, duration, (host, int(port)), verbose)
    print(_line("done", counts), file=sys.stderr, flush=True)
    return 0
