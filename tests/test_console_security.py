"""The console's lock: CSRF, read-only, tokens and the login form, the Host check, the
headers, the refusal to listen beyond loopback without a token — and no message moved twice
when two people (and the command line) act on one queue at once."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import anyio
import pytest
from aiohttp import web
from yarl import URL

from tests.console_client import audit_lines, browser, running_console
from tests.helpers import depth, drain, wait_for
from tests.test_console import _setup, settings_for
from tests.test_operator_loop import Cli
from tests.test_operator_safety import _park, _visible
from worker.console import actions, pages
from worker.console.security import HEADERS, Lock
from worker.emulator import create_queue
from worker.emulator.proxy import Rule

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

TOKEN = "s3cret-token-for-alice"


async def test_a_post_without_its_csrf_token_is_refused_and_changes_nothing(aws, tmp_path):
    _dlq, parking = await _setup(aws)
    async with running_console(settings_for(aws.url), backup_dir=tmp_path) as (url, _):
        async with browser(url) as b:
            page = await b.get("/queues/orders")
            form = {"action": "purge"}
            assert (await b.post("/queues/orders/plan", form)).status == 403
            forged = {**form, "csrf": "0" * 64}
            assert (await b.post("/queues/orders/plan", forged)).status == 403
            assert (await b.post("/queues/orders/plan", {**form, "csrf": page.csrf})).status == 200
        # another site's page posting with a token it copied: no cookie of ours, refused
        async with browser(url) as other:
            stolen = {**form, "csrf": page.csrf}
            assert (await other.post("/queues/orders/plan", stolen)).status == 403
    assert await depth(aws.sqs, parking) == 24
    assert list(tmp_path.iterdir()) == []


async def test_read_only_shows_no_action_and_refuses_every_post(aws, tmp_path):
    await _setup(aws)
    lock = Lock(None, read_only=True)
    async with running_console(settings_for(aws.url), lock=lock) as (url, _), browser(url) as b:
        page = await b.get("/queues/orders")
        assert page.status == 200
        assert "read-only" in page.element("read-only")
        assert 'action="/queues/orders/plan"' not in page.text
        # the forms are not there; posting them anyway (with a valid token) is refused
        found = await b.get("/queues/orders")
        assert "/plan" not in found.text
        cookie = b.session.cookie_jar.filter_cookies(URL(url))["rw_csrf"].value
        valid = {"action": "purge", "csrf": lock.token_for(cookie)}
        assert (await b.post("/queues/orders/plan", valid)).status == 403


async def test_a_token_or_the_login_form_is_needed_and_names_who_acted(aws, tmp_path):
    await _setup(aws)
    lock = Lock({TOKEN: "alice"})
    settings = settings_for(aws.url)
    async with running_console(settings, lock=lock) as (url, audit):
        async with browser(url) as anonymous:
            page = await anonymous.get("/queues/orders")
            assert page.status == 401
            assert 'id="token"' in page.text, "the login form"
        async with browser(url, Authorization="Bearer wrong-token-0123456789") as wrong:
            assert (await wrong.get("/")).status == 401
        async with browser(url, Authorization=f"Bearer {TOKEN}") as api:
            home = await api.get("/")
            assert home.status == 200
            assert "alice" in home.text
        async with browser(url) as person:
            login = await person.get("/login?next=/queues/orders")
            failed = await person.post(
                "/login", {"csrf": login.csrf, "token": "not-it-0123456789", "next": "/"}
            )
            assert "login-failed" in failed.text
            async with person.session.post(
                f"{url}login",
                data={"csrf": login.csrf, "token": TOKEN, "next": "/queues/orders"},
                allow_redirects=False,
            ) as r:
                assert r.status == 303
                assert r.headers["Location"] == "/queues/orders"
                cookie = r.headers["Set-Cookie"]
                assert "rw_session=" in cookie
                assert "HttpOnly" in cookie
                assert "SameSite=Strict" in cookie
            page = await person.get("/queues/orders")
            assert page.status == 200
            assert "alice" in page.text
            message_id = page.text.split("/queues/orders/messages/", 1)[1].split('"', 1)[0]
            await person.post(f"/queues/orders/messages/{message_id}/body", {"csrf": page.csrf})
            logout = await person.post("/logout", {"csrf": page.csrf})
            assert 'id="token"' in logout.text
            assert (await person.get("/queues/orders")).status == 401
    [line] = audit_lines(audit)
    assert line["who"] == "alice"


async def test_every_answer_carries_the_headers_and_foreign_hosts_are_refused(aws):
    await _setup(aws)
    async with running_console(settings_for(aws.url)) as (url, _), browser(url) as b:
        for path in ("/", "/queues/orders", "/queues/nope", "/jobs/nope", "/static/console.css"):
            page = await b.get(path)
            for name, value in HEADERS.items():
                assert page.headers.get(name) == value, (path, name)
        csp = HEADERS["Content-Security-Policy"]
        assert "script-src" not in csp
        assert "default-src 'none'" in csp
        assert "<script" not in (await b.get("/queues/orders")).text
        # a DNS name of someone else's pointed at 127.0.0.1 (DNS rebinding)
        rebound = await b.get("/", headers={"Host": "attacker.example:8090"})
        assert rebound.status == 403
        for path in ("/", "/static/console.css", "/queues/nope"):  # no version to look up
            assert (await b.get(path)).headers["Server"] == "retry-worker"


@pytest.mark.slow
async def test_two_people_and_the_command_line_never_move_a_message_twice(aws, proxy, tmp_path):
    dlq, parking = await _setup(aws)
    await _park(aws, parking, dlq, 40, first=100)  # 60 parked messages of orders
    tree = settings_for(aws.url).model_dump(mode="json")
    tree.pop("discovery", None)
    cli = Cli(tmp_path, tree)
    async with (
        running_console(settings_for(aws.url), backup_dir=tmp_path) as (url, _),
        browser(url) as alice,
        browser(url) as bob,
    ):
        first = await alice.plan("orders", action="replay", to="dlq")
        second = await bob.plan("orders", action="replay", to="dlq")
        results: dict[str, object] = {}

        async def confirm(who, job, key):
            results[key] = await who.confirm(job, rate="200")

        async def command_line():
            results["cli"] = await cli(
                "parked", "replay", "orders", "--yes", "--rate", "200", "--backup", "cli.jsonl"
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(confirm, alice, first, "alice")
            tg.start_soon(confirm, bob, second, "bob")
            tg.start_soon(command_line)
        moved = 0
        for key in ("alice", "bob"):
            page = await alice.finished(results[key].url.rsplit("/", 1)[1])
            assert 'id="job-error"' not in page.text, page.element("job-error")
            moved += int(re.search(r"done: (\d+)", page.element("result")).group(1))
        cli_done = re.search(r"done: (\d+), failed: 0", results["cli"].stdout)
        assert cli_done, results["cli"].stdout + results["cli"].stderr
        assert moved + int(cli_done.group(1)) == 60, "each counted once, by whoever moved it"
    replayed = [json.loads(m["Body"])["n"] for m in await drain(aws.sqs, dlq, delete=True)]
    twice = {n: c for n, c in Counter(replayed).items() if c > 1}
    assert twice == {}, "moved twice"
    assert len(replayed) == 60
    assert await depth(aws.sqs, parking) == 4  # billing's, untouched


def test_a_console_beyond_loopback_needs_a_token_file(tmp_path):
    def console(*args: str) -> subprocess.CompletedProcess[str]:
        config = tmp_path / "c.yaml"
        config.write_text("queues: {}\n")
        command = [sys.executable, "-m", "worker", "console", "--config", str(config), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    refused = console("--listen", "0.0.0.0:0")
    assert refused.returncode == 2
    assert "needs --auth-token-file" in refused.stderr
    short = tmp_path / "short"
    short.write_text("alice:tooshort\n")
    weak = console("--listen", "0.0.0.0:0", "--auth-token-file", str(short))
    assert weak.returncode == 2
    assert "16 characters" in weak.stderr
    missing = console("--auth-token-file", str(tmp_path / "absent"))
    assert missing.returncode == 2
    assert "absent" in missing.stderr
    assert console("--listen", "nonsense").returncode == 2


async def test_the_audit_names_who_confirmed_not_who_planned(aws, tmp_path):
    await _setup(aws)
    bob_token = "bobs-own-token-0123456789"
    lock = Lock({TOKEN: "alice", bob_token: "bob"})
    settings = settings_for(aws.url)
    async with (
        running_console(settings, lock=lock, backup_dir=tmp_path) as (url, audit),
        browser(url, Authorization=f"Bearer {TOKEN}") as alice,
        browser(url, Authorization=f"Bearer {bob_token}") as bob,
    ):
        job = await alice.plan("orders", action="export", match="$.n=1")
        csrf = (await bob.get("/queues/orders")).csrf
        confirmed = await bob.post(f"/jobs/{job}/confirm", {"csrf": csrf})
        await bob.finished(confirmed.url.rsplit("/", 1)[1])
    [line] = audit_lines(audit)
    assert (line["who"], line["action"]) == ("bob", "export")


@pytest.mark.parametrize(
    "elsewhere",
    [
        "//evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example/",
        "x",
        "/\t/evil.example/x",  # issue 27, defect 7: WHATWG removes the tab: //evil.example
        "/\n/evil.example/x",
        "\t//evil.example/x",
        " //evil.example/x",
        "/\r\\evil.example",
        "java\tscript:alert(1)",
    ],
)
def test_after_logging_in_only_a_path_of_this_console(elsewhere):
    from worker.console.actions import _local_path

    assert _local_path("/queues/orders?reason=x") == "/queues/orders?reason=x"
    assert _local_path(elsewhere) == "/"


async def test_a_tab_in_next_sends_the_browser_home_after_logging_in(aws):
    await _setup(aws)
    lock = Lock({TOKEN: "alice"})
    async with running_console(settings_for(aws.url), lock=lock) as (url, _), browser(url) as b:
        login = await b.get("/login")
        form = {"csrf": login.csrf, "token": TOKEN, "next": "/\t/evil.example/x"}
        async with b.session.post(f"{url}login", data=form, allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"] == "/"


async def test_a_read_only_console_still_logs_out(aws):
    """Issue 27, defect 9: every POST but /login was refused, logging out too."""
    await _setup(aws)
    lock = Lock({TOKEN: "alice"}, read_only=True)
    async with running_console(settings_for(aws.url), lock=lock) as (url, _), browser(url) as b:
        login = await b.get("/login")
        home = await b.post("/login", {"csrf": login.csrf, "token": TOKEN, "next": "/"})
        assert "alice" in home.element("who")
        logout = await b.post("/logout", {"csrf": home.csrf})
        assert logout.status == 200
        assert 'id="token"' in logout.text
        assert (await b.get("/")).status == 401
        assert lock.sessions == {}


async def test_only_a_plan_takes_a_large_form(aws):
    """An edited body may be 2 MiB on the wire; nothing else is more than a few fields: a
    login form (open to anyone) of 200 KB is refused before it is read."""
    await _setup(aws)
    lock = Lock({TOKEN: "alice"})
    async with running_console(settings_for(aws.url), lock=lock) as (url, _), browser(url) as b:
        login = await b.get("/login")
        padded = {"csrf": login.csrf, "token": TOKEN, "next": "/", "pad": "x" * 200_000}
        refused = await b.post("/login", padded)
        assert refused.status == 413
        assert "the form is over 65,536 bytes" in refused.text

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: not read at all
            yield urlencode(padded).encode()

        form = {"Content-Type": "application/x-www-form-urlencoded"}
        async with b.session.post(b.base + "/login", data=chunks(), headers=form) as chunked:
            assert chunked.status == 411
        assert lock.sessions == {}
        home = await b.post("/login", {"csrf": login.csrf, "token": TOKEN, "next": "/"})
        assert "alice" in home.element("who")


async def test_a_csrf_token_is_worth_nothing_in_another_session(aws):
    """A token someone got for a cookie they planted (a sibling origin can set cookies for
    this host: cookies do not tell ports apart) does not pass in the victim's session."""
    await _setup(aws)
    lock = Lock({TOKEN: "alice"})
    async with running_console(settings_for(aws.url), lock=lock) as (url, _):
        async with browser(url) as attacker:
            page = await attacker.get("/login")  # anyone may load it
            planted = attacker.session.cookie_jar.filter_cookies(URL(url))["rw_csrf"].value
            stolen = page.csrf
        async with browser(url) as victim:
            login = await victim.get("/login")
            await victim.post("/login", {"csrf": login.csrf, "token": TOKEN, "next": "/"})
            victim.session.cookie_jar.update_cookies({"rw_csrf": planted}, URL(url))
            forged = {"action": "purge", "csrf": stolen}
            assert (await victim.post("/queues/orders/plan", forged)).status == 403
            own = await victim.get("/queues/orders")  # the victim's own page still works
            assert (
                await victim.post("/queues/orders/plan", {"action": "purge", "csrf": own.csrf})
            ).status == 200


async def test_another_sites_image_or_form_never_reaches_the_console(aws, proxy):
    """A cross-site `<img>` of a page would start a read of the parking queue (it holds
    messages); a new read and showing a body are POSTs with a token, and a request a browser
    marks as another site's is refused unless it follows a link."""
    await _setup(aws)
    async with running_console(settings_for(proxy.url)) as (url, _), browser(url) as b:
        image = {
            "Sec-Fetch-Site": "cross-site",
            "Sec-Fetch-Mode": "no-cors",
            "Sec-Fetch-Dest": "image",
        }
        assert (await b.get("/queues/orders", headers=image)).status == 403
        sibling = {**image, "Sec-Fetch-Site": "same-site"}
        assert (await b.get("/queues/billing", headers=sibling)).status == 403
        assert proxy.count("sqs", "ReceiveMessage") == 0, "no read started"
        link = {
            "Sec-Fetch-Site": "cross-site",
            "Sec-Fetch-Mode": "navigate",
            "Sec-Fetch-Dest": "document",
        }
        page = await b.get("/queues/orders", headers=link)  # a link someone followed
        assert page.status == 200
        # the old GETs start nothing: `refresh` and `body` are plain parameters now
        reads = proxy.count("sqs", "GetQueueAttributes")
        await b.get("/queues/orders?refresh=1")
        assert proxy.count("sqs", "GetQueueAttributes") == reads


async def test_a_snapshot_holds_messages_no_longer_than_the_page_says(aws, proxy):
    """The read's hold grew to its projected end plus 10 minutes after 100 messages: a
    console killed mid-read hid messages for 10 minutes or more, the page says 60 s."""
    dlq = await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "billing-dlq")
    parking = await create_queue(aws.sqs, "parked")
    await _park(aws, parking, dlq, 150)
    async with running_console(settings_for(proxy.url)) as (url, _), browser(url) as b:
        await b.get("/queues/orders")
        await wait_for(lambda: _visible(aws, parking, 150), timeout=60)  # read and released
    holds = [
        r["VisibilityTimeout"]
        for r in proxy.requests("sqs", "ReceiveMessage")
        if r["QueueUrl"].endswith("/parked")
    ]
    assert sum(1 for _ in holds) >= 15  # the whole queue was read
    assert max(holds) <= 60


@pytest.mark.slow  # a daemon and CLI processes: make test, not make unit
async def test_a_shared_parking_queue_is_read_and_acted_on_in_turns(aws, proxy):
    """Issue 27, defect 8: the console locked per queue name, but two DLQs may share one
    parking queue: one queue's snapshot held the other's messages while that one's plan ran,
    and the plan counted fewer than its page showed."""
    dlq, parking = await _setup(aws)  # orders: 20 parked, billing: 4, one parking queue
    await _park(aws, parking, dlq, 60, first=100)  # a longer read for orders
    async with running_console(settings_for(proxy.url)) as (url, _), browser(url) as b:
        # Receives take a region's round trip: the orders read is still under way when the
        # billing plan starts.
        proxy.add(Rule("sqs", "ReceiveMessage", "delay", seconds=0.5))
        orders = await b.get("/queues/orders")
        assert "Reading the parking queue" in orders.text
        planned = await b.post("/queues/billing/plan", {"action": "purge", "csrf": orders.csrf})
        page = await b.finished(planned.url.rsplit("/", 1)[1])
        assert page.element("plan-total") == "4 parked messages match."
    assert await depth(aws.sqs, parking) == 84


def post_routes() -> list[str]:
    """Every POST route the console has, as its router knows them (a new route is covered
    without touching this test)."""
    app = web.Application()
    pages.add_routes(app)
    actions.add_routes(app)
    return sorted(
        r.resource.canonical
        for r in app.router.routes()
        if r.method == "POST" and r.resource is not None
    )


async def test_every_post_route_refuses_a_missing_forged_or_borrowed_token(aws, tmp_path):
    """Issue 29, item 8: each POST route, with no token, a forged one and another session's
    valid one: 403, and nothing happened — no message moved, no backup, no audit line, the
    planned job still waiting for its confirmation, no body shown."""
    _dlq, parking = await _setup(aws)
    routes = post_routes()
    assert {"/login", "/logout", "/jobs/{job_id}/confirm", "/queues/{queue}/plan"} <= set(routes)
    async with (
        running_console(settings_for(aws.url), backup_dir=tmp_path) as (url, audit),
        browser(url) as owner,
        browser(url) as other,
    ):
        job = await owner.plan("orders", action="purge")
        listing = await owner.get("/queues/orders")
        [parked_id, *_] = re.findall(r"/queues/orders/messages/([^\"]+)\"", listing.text)
        values = {"queue": "orders", "job_id": job, "message_id": parked_id}
        borrowed = (await other.get("/queues/orders")).csrf  # valid, for the other session
        form = {"action": "purge", "token": TOKEN, "next": "/"}
        for route in routes:
            path = route.format(**values)
            for csrf in (None, "0" * 64, borrowed):
                data = form if csrf is None else {**form, "csrf": csrf}
                answer = await owner.post(path, data)
                assert answer.status == 403, (route, csrf)
                assert '"n": ' not in answer.text, (route, "a body shown")
                assert "&#34;n&#34;" not in answer.text, (route, "a body shown")
        waiting = await owner.get(f"/jobs/{job}")
        assert "confirm" in waiting.text.lower()
        assert audit_lines(audit) == []
        assert await depth(aws.sqs, parking) == 24
        assert list(tmp_path.iterdir()) == []
        # and the same routes take the page's own token (a route that refused everything
        # would pass the above)
        for route in routes:
            page = await owner.get("/queues/orders")
            answer = await owner.post(route.format(**values), {**form, "csrf": page.csrf})
            assert answer.status != 403, route
