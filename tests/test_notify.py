"""Notifications (SPEC.md, Notifications): one digest per key per window, to SNS, EventBridge
and a webhook, without ever holding the queue loop."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from tests.conftest import Worker, make_settings
from tests.helpers import depth, drain, run_until, wait_for
from worker.core.notices import ParkedNotice
from worker.daemon.app import serve
from worker.emulator import create_function, create_queue, queue_arn
from worker.emulator.proxy import Rule
from worker.metrics import Metrics
from worker.notify.digest import MAX_SAMPLES, Digests
from worker.notify.notifier import Notifier
from worker.notify.sinks import SinkFailed, WebhookDigests
from worker.settings import NotifySettings

pytestmark = pytest.mark.anyio

BOOM = {"errorType": "Boom", "errorMessage": "boom"}


# -- digests (pure) -------------------------------------------------------------------------


def _parked(message_id: str, error_type: str | None, said: str | None = None) -> ParkedNotice:
    return ParkedNotice(
        "orders", "max_attempts", "FunctionError.Unhandled", message_id, error_type, said
    )


def test_one_digest_per_key_per_window_with_counts_and_five_samples():
    digests = Digests(window_seconds=60, quiet_seconds=3600, console_url="https://rw.example/")
    for i in range(7):
        digests.parked(_parked(f"m{i}", "Boom", said=f"boom {i}"), 10 + i)
    digests.parked(_parked("x", "Other"), 20)
    assert digests.due(69) == []  # the first window is still open
    [first] = digests.due(70)
    assert first["count"] == 7
    assert first["error_message"] == "boom 0"  # what the target said, the first time
    assert first["sample_message_ids"] == [f"m{i}" for i in range(MAX_SAMPLES)]
    assert (first["window_start"], first["window_end"]) == (
        "1970-01-01T00:00:10+00:00",
        "1970-01-01T00:01:10+00:00",
    )
    assert (
        first["console"] == "https://rw.example/queues/orders"
        "?reason=max_attempts&error=FunctionError.Unhandled&error_type=Boom"
    )
    [other] = digests.due(80)  # its own window closes on its own time
    assert (other["error_type"], other["count"]) == ("Other", 1)
    digests.parked(_parked("late", "Boom"), 71)
    [again] = digests.due(131)  # the next window of the same key
    assert again["count"] == 1


@pytest.mark.parametrize("error_messages", [True, False])
async def test_what_a_target_said_leaves_the_account_only_when_asked(error_messages):
    """`error_messages: false` keeps what a target said (it may quote the message: a card,
    an address) out of every digest; its type, the count and the link stay."""
    taken: list[dict[str, Any]] = []

    class Sink:
        kind = "sns"

        async def send(self, digest: dict[str, Any]) -> None:
            taken.append(digest)

    settings = NotifySettings(events=("parked",), error_messages=error_messages)
    notifier = Notifier(settings, [Sink()], Metrics(CollectorRegistry()))
    notifier.parked(_parked("m1", "PaymentDeclined", said="card 4242 declined"))
    stop = anyio.Event()
    stop.set()
    await notifier.run(stop)
    [digest] = taken
    assert digest["error_type"] == "PaymentDeclined"
    assert digest["count"] == 1
    assert digest["error_message"] == ("card 4242 declined" if error_messages else None)


def test_arrived_once_after_a_quiet_spell_not_for_every_batch():
    digests = Digests(window_seconds=60, quiet_seconds=600, started=0)
    digests.received("orders", ["a"], 100)  # 100 s after boot: not quiet long enough
    digests.received("orders", ["b"], 800)  # 700 s after the last: an arrival
    digests.received("orders", ["c", "d"], 810)  # the same arrival, counted
    digests.received("orders", ["e"], 900)  # after the window: busy, not an arrival
    [arrived] = digests.due(900)
    assert (arrived["event"], arrived["queue"], arrived["count"]) == ("arrived", "orders", 3)
    assert digests.due(10_000) == []
    digests.received("orders", ["f"], 1600)  # quiet again since 900
    [again] = digests.due(1660)
    assert again["count"] == 1


def test_events_not_asked_for_are_not_digested():
    digests = Digests(window_seconds=1, quiet_seconds=0, events=("arrived",))
    digests.parked(_parked("m", None), 5)
    assert digests.due(100) == []


# -- sinks, retries and a dead or hanging sink ----------------------------------------------


@asynccontextmanager
async def webhook(answers: list[int], hang: anyio.Event | None = None) -> AsyncIterator[tuple]:
    """A loopback webhook answering `answers` in turn (then 200); `hang`: hold every request
    until it is set. Yields its URL and what it received."""
    received: list[Any] = []
    holding = anyio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        if hang is not None:
            holding.set()
            await hang.wait()
        status = answers.pop(0) if answers else 200
        return web.Response(status=status, headers={"Retry-After": "0"})

    async with serving("/hook/secret-path", hook) as url:
        try:
            yield url, received, holding
        finally:
            if hang is not None:
                hang.set()


@asynccontextmanager
async def serving(path: str, handler: Any) -> AsyncIterator[str]:
    """`handler` answering POSTs to `path` on loopback; yields the URL."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        await runner.cleanup()


def _notify(tmp_path: Path, url: str, **settings: Any) -> dict[str, Any]:
    secret = tmp_path / "webhook-url"
    secret.write_text(url + "\n")
    return {
        "events": ["parked"],
        "window_seconds": 1,
        "sinks": [{"webhook": {"url_file": str(secret), "format": settings.pop("format", "json")}}],
        **settings,
    }


def _sent(registry: CollectorRegistry, sink: str, outcome: str) -> float:
    value = registry.get_sample_value(
        "retry_worker_notifications_total", {"sink": sink, "outcome": outcome}
    )
    return value or 0.0


async def test_a_webhook_that_answers_429_then_200_gets_the_digest_once(tmp_path):
    registry = CollectorRegistry()
    async with webhook([429]) as (url, received, _), anyio.create_task_group() as tg:
        settings = NotifySettings(**_notify(tmp_path, url, format="slack"))

        async with aiohttp.ClientSession() as session:
            notifier = Notifier(
                settings, [WebhookDigests(session, settings.sinks[0].webhook)], Metrics(registry)
            )
            stop = anyio.Event()
            tg.start_soon(notifier.run, stop)
            for i in range(3):
                notifier.parked(_parked(f"m{i}", "Boom", said="boom"))
            await wait_for(lambda: _sent(registry, "webhook", "sent") == 1, timeout=20)
            stop.set()
    assert len(received) == 2  # refused once, then taken
    assert received[0] == received[1]
    text = received[1]["text"]
    assert "3 messages parked from `orders`: `max_attempts`" in text
    assert "error `FunctionError.Unhandled`, type `Boom`\nsaid `boom`" in text
    assert "e.g. `m0`, `m1`, `m2`" in text
    assert (received[1]["unfurl_links"], received[1]["unfurl_media"]) == (False, False)
    assert _sent(registry, "webhook", "retried") == 1


class Refusing:
    """A sink that refuses for good (a denied permission), counting its calls."""

    kind = "sns"

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, digest: dict[str, Any]) -> None:
        self.calls += 1
        raise SinkFailed("AuthorizationError", retryable=False, sink_down=True)


async def test_a_dead_sink_is_logged_once_a_window_and_drops_are_counted():
    registry = CollectorRegistry()

    settings = NotifySettings(window_seconds=60, queue_size=2, events=("parked",))
    sink = Refusing()
    notifier = Notifier(settings, [sink], Metrics(registry), clock=lambda: 0.0)
    for reason in ("a", "b", "c", "d"):
        notifier.parked(ParkedNotice("orders", reason, "E", "m"))
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            stop = anyio.Event()
            stop.set()  # close every window now, send, end
            tg.start_soon(notifier.run, stop)
    assert notifier.finished.is_set()
    assert _sent(registry, "sns", "dropped") == 2  # four digests, room for two
    assert _sent(registry, "sns", "failed") == 2
    assert sink.calls == 1  # the sink refused for good: not called again this window
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["notification_failed"]


async def test_a_refusing_sink_is_asked_again_after_five_minutes_whatever_the_window():
    """A sink that refused for good is left alone for the window, but 300 s at most: a
    403 while a new role's policy spreads (IAM is eventually consistent) silenced a sink
    with `window_seconds: 3600` for the hour."""
    registry = CollectorRegistry()
    now = [0.0]

    async def paced(seconds: float) -> None:
        now[0] += 301  # the next digest comes 301 s later

    settings = NotifySettings(window_seconds=3600, events=("parked",))
    sink = Refusing()
    notifier = Notifier(settings, [sink], Metrics(registry), clock=lambda: now[0], sleep=paced)
    send, receive = anyio.create_memory_object_stream[dict[str, Any]](4)
    for reason in ("a", "b"):
        send.send_nowait({"event": "parked", "queue": "orders", "reason": reason, "count": 1})
    send.close()
    await notifier._send_all(0, sink, receive)
    assert sink.calls == 2


async def test_one_digest_refused_leaves_the_sink_to_the_others():
    """A 400 for one digest is that digest's failure; the sink still takes the next ones."""
    registry = CollectorRegistry()

    class Picky:
        kind = "webhook"
        taken: list[str] = []

        async def send(self, digest: dict[str, Any]) -> None:
            if digest["reason"] == "a":
                raise SinkFailed("HTTP 400", retryable=False)
            Picky.taken.append(digest["reason"])

    paced: list[float] = []

    async def sleep(seconds: float) -> None:
        paced.append(seconds)

    settings = NotifySettings(window_seconds=1, events=("parked",))
    now = [0.0]
    notifier = Notifier(settings, [Picky()], Metrics(registry), clock=lambda: now[0], sleep=sleep)
    for reason in ("a", "b", "c"):
        notifier.parked(ParkedNotice("orders", reason, "E", "m"))
    async with anyio.create_task_group() as tg:
        stop = anyio.Event()
        tg.start_soon(notifier.run, stop)
        now[0] = 5.0  # the windows are due at the next tick
        await wait_for(lambda: len(Picky.taken) == 2, timeout=10)
        stop.set()
    assert sorted(Picky.taken) == ["b", "c"]
    assert (_sent(registry, "webhook", "failed"), _sent(registry, "webhook", "sent")) == (1, 2)
    assert paced == [1.0, 1.0, 1.0]  # one send a second, the refused one included


async def test_the_shutdown_sends_every_open_window_without_pacing():
    registry = CollectorRegistry()
    taken: list[str] = []

    class Sink:
        kind = "sns"

        async def send(self, digest: dict[str, Any]) -> None:
            taken.append(digest["reason"])

    async def never(seconds: float) -> None:
        raise AssertionError("paced during the flush")

    settings = NotifySettings(window_seconds=600, events=("parked",))
    notifier = Notifier(settings, [Sink()], Metrics(registry), sleep=never)
    for i in range(12):
        notifier.parked(ParkedNotice("orders", f"r{i}", "E", "m"))
    stop = anyio.Event()
    stop.set()
    await notifier.run(stop)
    assert len(taken) == 12
    assert _sent(registry, "sns", "sent") == 12


async def test_what_the_flush_cuts_off_is_counted_dropped(monkeypatch):
    """At shutdown, a digest still being sent (a hanging sink) or waiting to retry when the
    flush runs out is counted `dropped`, as are those queued behind it: every digest is
    counted once. It was counted nowhere."""
    monkeypatch.setattr("worker.notify.notifier.FLUSH_SECONDS", 0.5)
    registry = CollectorRegistry()

    class Hanging:
        kind = "webhook"

        async def send(self, digest: dict[str, Any]) -> None:
            await anyio.sleep_forever()

    settings = NotifySettings(window_seconds=600, events=("parked",), timeout_seconds=60)
    notifier = Notifier(settings, [Hanging()], Metrics(registry))
    for reason in ("r1", "r2", "r3"):
        notifier.parked(ParkedNotice("orders", reason, "E", "m"))
    stop = anyio.Event()
    stop.set()
    with anyio.fail_after(10):
        await notifier.run(stop)
    counted = {o: _sent(registry, "webhook", o) for o in ("sent", "failed", "dropped")}
    assert counted == {"sent": 0, "failed": 0, "dropped": 3}


async def test_a_retry_during_the_flush_waits_briefly():
    """A digest refused for now at shutdown is tried again after at most 0.5 s, not after
    its usual backoff (a Retry-After of a minute), which the flush would only cut off."""
    registry = CollectorRegistry()
    waits: list[float] = []
    answers = [SinkFailed("HTTP 429", retryable=True, retry_after=60.0)]

    class Busy:
        kind = "webhook"

        async def send(self, digest: dict[str, Any]) -> None:
            if answers:
                raise answers.pop()

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    settings = NotifySettings(window_seconds=600, events=("parked",))
    notifier = Notifier(settings, [Busy()], Metrics(registry), sleep=sleep)
    notifier.parked(ParkedNotice("orders", "max_attempts", "E", "m"))
    stop = anyio.Event()
    stop.set()
    await notifier.run(stop)
    assert waits == [0.5]
    assert _sent(registry, "webhook", "sent") == 1


async def test_a_topic_and_a_bus_in_another_region_get_their_digests(emulator):
    """SNS and EventBridge take a publish only in the topic's or bus's own region: through
    the home region's client, a topic in eu-west-1 was NotFound, taken for a dead sink, and
    every digest was lost. check-config --aws finds both there too."""
    from aiobotocore.session import get_session

    from worker.aws.clients import Clients
    from worker.notify.build import open_notifier
    from worker.ops.preflight import Findings, _sinks

    async with AsyncExitStack() as stack:

        async def client(service: str) -> Any:
            made = get_session().create_client(
                service, region_name="eu-west-1", endpoint_url=emulator.url
            )
            return await stack.enter_async_context(made)

        sns, events, sqs = await client("sns"), await client("events"), await client("sqs")
        topic = (await sns.create_topic(Name="retry-alerts"))["TopicArn"]
        bus = (await events.create_event_bus(Name="ops"))["EventBusArn"]
        inbox = (await sqs.create_queue(QueueName="inbox"))["QueueUrl"]
        inbox_arn = "arn:aws:sqs:eu-west-1:123456789012:inbox"
        await sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)
        await events.put_rule(
            Name="all", EventBusName="ops", EventPattern='{"source": ["retry-worker"]}'
        )
        await events.put_targets(
            Rule="all", EventBusName="ops", Targets=[{"Id": "q", "Arn": inbox_arn}]
        )
        sinks = [{"sns": {"topic_arn": topic}}, {"eventbridge": {"bus": bus}}]
        settings = make_settings(emulator.url, {}, notify={"sinks": sinks})
        assert settings.aws.region != "eu-west-1"
        clients = Clients(settings.aws, stack, pool=lambda service: 4)
        found = Findings()
        await _sinks(found, clients, settings)
        assert found.errors == []
        notifier = await open_notifier(
            settings.notify, clients, Metrics(CollectorRegistry()), stack
        )
        assert notifier is not None
        digest = {"event": "parked", "queue": "q", "count": 1, "reason": "r", "error": "E"}
        for sink in notifier._sinks:
            await sink.send(digest)
        got = await drain(sqs, inbox, delete=True)
        assert len(got) == 2


def test_a_webhook_goes_through_the_https_proxy_and_plain_http_never_does(monkeypatch):
    from worker.notify.sinks import proxy_for

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    assert proxy_for("https://hooks.slack.com/services/T/B/X") == "http://proxy.corp:3128"
    assert proxy_for("http://127.0.0.1:9000/hook/secret") is None
    assert proxy_for("https://hooks.internal.example/x") is None


async def test_a_hanging_sink_never_holds_settling(aws, proxy, worker_stack, tmp_path):
    """Parking goes on while the webhook holds its request: the notifier is told and returns."""
    hang = anyio.Event()
    async with webhook([], hang) as (url, received, holding):
        settings = NotifySettings(**_notify(tmp_path, url, timeout_seconds=60))

        async with aiohttp.ClientSession() as session, anyio.create_task_group() as tg:
            registry = CollectorRegistry()
            notifier = Notifier(
                settings, [WebhookDigests(session, settings.sinks[0].webhook)], Metrics(registry)
            )
            stop = anyio.Event()
            tg.start_soon(notifier.run, stop)
            worker, poller, dlq = await _failing_lambda(aws, proxy, worker_stack, notifier)
            await _send(aws, dlq, 3)
            await run_until(poller, lambda: worker.settled("orders", "parked") == 3)
            with anyio.fail_after(20):
                await holding.wait()  # the sink hangs on the first digest
            await _send(aws, dlq, 4)
            await run_until(poller, lambda: worker.settled("orders", "parked") == 7)
            assert len(received) == 1  # the sink still holds the first digest meanwhile
            hang.set()
            await wait_for(lambda: _sent(registry, "webhook", "sent") == 2, timeout=20)
            stop.set()
    assert [d["count"] for d in received] == [3, 4]


async def _failing_lambda(aws, proxy, stack, notifier: Any = None, **policy: Any) -> tuple:
    await create_function(aws.lambda_, "orders")
    dlq = await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "parked")
    proxy.add(Rule("lambda", "Invoke", "function_error", extra=BOOM))
    queue = {
        "name": "orders-dlq",
        "target": {"kind": "lambda", "function": "orders"},
        "policy": {"max_attempts": 1, **policy},
    }
    worker = Worker(make_settings(proxy.url, {"orders": queue}), stack)
    if notifier is not None:
        worker.shared.notices = notifier
    return worker, await worker.poller("orders"), dlq


async def _send(aws, dlq: str, count: int) -> None:
    for i in range(count):
        await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"n": i}))


# -- the daemon, to SNS and EventBridge ------------------------------------------------------


async def test_the_daemon_sends_one_digest_of_a_burst_to_sns_and_eventbridge(aws, proxy):
    sns = await aws.client("sns")
    events = await aws.client("events")
    topic = (await sns.create_topic(Name="retry-alerts"))["TopicArn"]
    by_sns = await create_queue(aws.sqs, "alerts-by-sns")
    await sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=await queue_arn(aws.sqs, by_sns))
    by_events = await create_queue(aws.sqs, "alerts-by-events")
    await events.put_rule(
        Name="digests", EventPattern=json.dumps({"detail-type": ["retry-worker.digest"]})
    )
    await events.put_targets(
        Rule="digests", Targets=[{"Id": "q", "Arn": await queue_arn(aws.sqs, by_events)}]
    )
    await create_function(aws.lambda_, "orders")
    dlq = await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "parked")
    proxy.add(Rule("lambda", "Invoke", "function_error", extra=BOOM))
    await _send(aws, dlq, 6)
    queue = {
        "name": "orders-dlq",
        "target": {"kind": "lambda", "function": "orders"},
        "policy": {"max_attempts": 1},
    }
    notify = {
        "events": ["parked"],
        "window_seconds": 600,  # closed by the shutdown: one digest, whatever the batches
        "console_url": "https://retry.example.internal",
        "sinks": [{"sns": {"topic_arn": topic}}, {"eventbridge": {"bus": "default"}}],
    }
    settings = make_settings(
        proxy.url, {"orders": queue}, http={"host": "127.0.0.1", "port": 0}, notify=notify
    )
    registry = CollectorRegistry()
    stop = anyio.Event()

    def parked() -> float:
        labels = {"queue": "orders", "action": "parked"}
        return registry.get_sample_value("retry_worker_messages_settled_total", labels) or 0

    async with anyio.create_task_group() as tg:
        await tg.start(functools.partial(serve, settings, stop, registry=registry))
        await wait_for(lambda: parked() == 6, timeout=30)
        assert _sent(registry, "sns", "sent") == 0  # the window is still open
        stop.set()  # the shutdown closes it and sends it before the daemon ends
    assert (_sent(registry, "sns", "sent"), _sent(registry, "eventbridge", "sent")) == (1, 1)
    [published] = [
        json.loads(json.loads(m["Body"])["Message"]) for m in await drain(aws.sqs, by_sns)
    ]
    [put] = [json.loads(m["Body"]) for m in await drain(aws.sqs, by_events)]
    assert published["count"] == 6
    digest = published
    assert (digest["event"], digest["queue"], digest["reason"]) == (
        "parked",
        "orders",
        "max_attempts",
    )
    assert (digest["error"], digest["error_type"]) == ("FunctionError.Unhandled", "Boom")
    assert digest["error_message"] == "boom"
    assert len(digest["sample_message_ids"]) == 5
    assert digest["console"].startswith("https://retry.example.internal/queues/orders?")
    assert put["detail-type"] == "retry-worker.digest"
    assert put["source"] == "retry-worker"
    assert put["detail"] == digest


def test_what_a_target_said_never_becomes_a_slack_link_or_mention():
    from worker.notify.sinks import slack_text

    digests = Digests(window_seconds=1, quiet_seconds=0, console_url="https://rw.example")
    said = "failed: see <https://evil.example|your bank> <!channel> & retry\nnow"
    digests.parked(_parked("m", "Boom<x>", said=said), 0)
    [digest] = digests.due(5)
    text = slack_text(digest)
    # inside a code span, escaped: no link, no mention, no formatting, one line
    assert (
        "said `failed: see &lt;https://evil.example|your bank&gt; &lt;!channel&gt; &amp; retry now`"
        in text
    )
    assert "type `Boom&lt;x&gt;`" in text
    assert "\n<https://rw.example/queues/orders?reason=max_attempts" in text  # ours is a link


def test_an_sns_subject_is_one_line_of_printable_ascii_under_100():
    from worker.notify.sinks import sns_subject

    digests = Digests(window_seconds=1, quiet_seconds=0)
    digests.parked(_parked("m", "Zahlung\nabgelehnt—" + "x" * 200), 0)
    [digest] = digests.due(5)
    subject = sns_subject(digest)
    assert subject.startswith("retry-worker: 1 message parked from orders: max_attempts (Zahlung")
    assert len(subject) < 100
    assert all(" " <= c <= "~" for c in subject)


async def test_a_failing_notifier_never_costs_a_settlement(aws, proxy, worker_stack):
    """Parked once each, deleted from the DLQ, the loop going on: a notifier that raises is
    logged, never the batch's problem (it would leave parked messages in the DLQ, to be
    parked again on their next receive)."""

    class Exploding:
        def parked(self, notice: ParkedNotice) -> None:
            raise RuntimeError("bug in the notifier")

        def received(self, queue: str, message_ids: list[str]) -> None:
            raise RuntimeError("bug in the notifier")

    worker, poller, dlq = await _failing_lambda(aws, proxy, worker_stack, Exploding())
    await _send(aws, dlq, 3)
    with capture_logs() as logs:
        await run_until(poller, lambda: worker.settled("orders", "parked") == 3)
    assert await depth(aws.sqs, dlq) == 0
    parking = (await aws.sqs.get_queue_url(QueueName="parked"))["QueueUrl"]
    parked = await drain(aws.sqs, parking)
    assert sorted(json.loads(m["Body"])["n"] for m in parked) == [0, 1, 2]
    assert any(e["event"] == "notice_failed" for e in logs)


def test_every_sink_series_starts_at_zero_so_the_first_failure_is_an_increase():
    registry = CollectorRegistry()

    class Sink:
        kind = "webhook"

        async def send(self, digest: dict[str, Any]) -> None: ...

    Notifier(NotifySettings(), [Sink()], Metrics(registry))
    for outcome in ("sent", "retried", "failed", "dropped"):
        value = registry.get_sample_value(
            "retry_worker_notifications_total", {"sink": "webhook", "outcome": outcome}
        )
        assert value == 0.0, outcome


def test_a_wall_clock_step_neither_holds_nor_closes_a_window():
    """Windows run on the monotonic clock; the wall clock only stamps the digest."""
    wall = [1_000_000.0]
    digests = Digests(window_seconds=60, quiet_seconds=0, wall=lambda: wall[0])
    digests.parked(_parked("m", "Boom"), 10)  # monotonic 10
    wall[0] -= 3600  # the wall clock steps back an hour
    [digest] = digests.due(70)  # 60 monotonic seconds later: closed
    assert digest["window_start"] == "1970-01-12T13:46:40+00:00"
    assert digest["window_end"] == "1970-01-12T13:47:40+00:00"


@pytest.mark.parametrize(
    ("url", "taken"),
    [
        ("https://hooks.slack.com/services/T/B/X", True),
        ("http://127.0.0.1:9/hook", True),
        ("http://hooks.example.com/T/B/X", False),  # the credential in the clear
        ("ftp://hooks.example.com/x", False),
    ],
)
async def test_a_webhook_url_is_https_but_on_this_host(tmp_path, url, taken):
    secret = tmp_path / "url"
    secret.write_text(url)
    settings = NotifySettings(sinks=[{"webhook": {"url_file": str(secret)}}])
    async with aiohttp.ClientSession() as session:
        sink = WebhookDigests(session, settings.sinks[0].webhook)
        if taken:
            assert await sink._url() == url
        else:
            with pytest.raises(SinkFailed, match="not an https:// URL") as refused:
                await sink._url()
            assert "example.com" not in str(refused.value)  # never the secret itself


async def test_a_webhook_answer_is_not_read_past_its_status(tmp_path):
    """An answer whose body never ends (or is gigabytes) costs a few KiB: the digest is sent
    at its status. Read whole, it held the answer in memory and timed out every try."""

    async def endless(request: web.Request) -> web.StreamResponse:
        await request.read()
        answer = web.StreamResponse(status=200)
        await answer.prepare(request)
        with anyio.move_on_after(30):
            while True:
                await answer.write(b"x" * 65536)
        return answer

    async with serving("/hook", endless) as url:
        secret = tmp_path / "url"
        secret.write_text(url)
        settings = NotifySettings(sinks=[{"webhook": {"url_file": str(secret)}}])
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            sink = WebhookDigests(session, settings.sinks[0].webhook)
            await sink.send({"event": "parked", "queue": "orders", "count": 1})


async def test_a_retry_coming_back_is_not_an_arrival(aws, proxy, worker_stack):
    """Only a message's first receive in its DLQ is new to it: a deferred one that comes
    back for its next attempt is not announced again."""

    class Recorder:
        def __init__(self) -> None:
            self.new: list[str] = []

        def parked(self, notice: ParkedNotice) -> None: ...

        def received(self, queue: str, message_ids: list[str]) -> None:
            self.new.extend(message_ids)

    told = Recorder()
    backoff = {"initial_seconds": 0, "max_seconds": 0}
    worker, poller, dlq = await _failing_lambda(
        aws, proxy, worker_stack, told, max_attempts=3, backoff=backoff
    )
    await _send(aws, dlq, 2)
    await run_until(poller, lambda: worker.settled("orders", "parked") == 2)
    assert worker.settled("orders", "deferred") == 4  # each came back twice
    assert len(told.new) == len(set(told.new)) == 2


async def test_what_a_settle_parked_is_told_even_when_the_settle_runs_out_of_time(
    aws, proxy, worker_stack, monkeypatch
):
    """Parked and deleted, then the visibility change hangs past the settle's deadline: the
    notifier was told when the parking queue took it, not at the end it never reached."""
    import worker.dlq.batch as batch

    told: list[ParkedNotice] = []

    class Notices:
        def parked(self, notice: ParkedNotice) -> None:
            told.append(notice)

        def received(self, queue: str, message_ids: list[str]) -> None: ...

    monkeypatch.setattr(batch, "SETTLE_DEADLINE_SECONDS", 1)
    not_found = Rule("lambda", "Invoke", "error", status=404, code="ResourceNotFoundException")
    not_found.body = "parkme"
    proxy.add(not_found)
    proxy.add(Rule("sqs", "ChangeMessageVisibilityBatch", "delay", seconds=4))
    _, poller, dlq = await _failing_lambda(aws, proxy, worker_stack, Notices(), max_attempts=5)
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"parkme": 1}))
    await aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"retry": 1}))
    await run_until(poller, lambda: proxy.count("sqs", "ChangeMessageVisibilityBatch") >= 1)
    await wait_for(lambda: bool(told), timeout=10)
    [notice] = told
    assert (notice.reason, notice.error) == ("target_not_found", "ResourceNotFoundException")
