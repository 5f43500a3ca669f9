"""The operator console on the emulator: its pages, and each action through plan →
confirmation → backup → result, covering exactly the filter the page shows."""

from __future__ import annotations

import json
import re

import anyio
import pytest

from tests.conftest import make_settings
from tests.console_client import Browser, Page, audit_lines, browser, running_console
from tests.helpers import depth, drain
from tests.test_operator_safety import META, _park, _visible
from worker.core.envelope import DlqMessage
from worker.core.parking import build_parked
from worker.emulator import create_queue

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


def settings_for(endpoint: str, **sections):
    queues = {
        "orders": {"name": "orders-dlq", "target": {"kind": "sqs", "queue": "out"}},
        "billing": {"name": "billing-dlq", "target": {"kind": "sqs", "queue": "out"}},
    }
    return make_settings(endpoint, queues, **sections)


async def _setup(aws):
    dlq = await create_queue(aws.sqs, "orders-dlq")
    billing = await create_queue(aws.sqs, "billing-dlq")
    parking = await create_queue(aws.sqs, "parked")
    await create_queue(aws.sqs, "out")
    await _park(aws, parking, dlq, 20)  # m0..m19: max_attempts / Boom
    await _park(aws, parking, billing, 4)
    return dlq, parking


async def _the_one_parked(b: Browser) -> tuple[Page, str]:
    """orders' page, and the id of the one message parked from it."""
    page = await b.get("/queues/orders")
    [parked_id] = re.findall(r'/queues/orders/messages/([^"]+)"', page.text)
    return page, parked_id


async def _parked(aws, count: int) -> tuple[str, str]:
    """orders (with `count` parked: bodies {"n": i}) and billing sharing one parking queue."""
    dlq = await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "billing-dlq")
    parking = await create_queue(aws.sqs, "parked")
    await create_queue(aws.sqs, "out")
    await _park(aws, parking, dlq, count)
    return dlq, parking


async def test_pages_show_queues_groups_and_one_message(aws, tmp_path):
    dlq, parking = await _setup(aws)
    async with running_console(settings_for(aws.url)) as (url, audit), browser(url) as b:
        home = await b.get("/")
        with anyio.fail_after(30):  # the shared parking queue is read once, then split
            while "reading the shared parking queue" in home.text:
                await anyio.sleep(0.1)
                home = await b.get("/")
        assert home.status == 200
        rows = home.element("queues")
        assert "orders" in rows
        assert "billing" in rows
        # each row its own queue's count of the shared parking queue's 24 (issue 34: 24, 24)
        cell = r'href="/queues/(\w+)">.*?<td class="n parked" title="([^"]*)">(\d+)</td>'
        parked = {name: count for name, _, count in re.findall(cell, home.text, re.S)}
        assert parked == {"orders": "20", "billing": "4"}
        assert "of 24 in the shared parking queue, as read" in home.text
        page = await b.get("/queues/orders")
        assert 'id="refresh"' in page.text, "the snapshot is read"
        # a page holds nothing: what the read held is visible again, the console still up
        assert await _visible(aws, parking, 24)
        assert page.element("matching") == "20 messages"
        assert "max_attempts 20" in page.element("by-reason")
        assert "Boom 20" in page.element("by-error")
        # a filter is query parameters: a link to share
        one = await b.get("/queues/orders?match=%24.n%3D7")
        assert "1 matching message" in one.element("matching")
        assert "<h2>Act on exactly this message</h2>" in one.text
        [parked_id] = re.findall(r"/queues/orders/messages/([^\"]+)\"", one.text)
        message = await b.get(f"/queues/orders/messages/{parked_id}")
        assert "max_attempts" in message.element("metadata")
        assert 'id="body"' not in message.text, "the body only on request"
        assert audit_lines(audit) == []
        shown = await b.post(f"/queues/orders/messages/{parked_id}/body", {"csrf": message.csrf})
        assert json.loads(shown.element("body")) == {"n": 7}
        [line] = audit_lines(audit)
        # refresh: a new read, and back to the page without `refresh` (a page refreshing
        # itself while reading must not start read after read)
        await _park(aws, parking, dlq, 1, first=500)
        form = {"csrf": page.csrf, "match": "$.n=500"}
        refreshed = await b.post("/queues/orders/refresh", form)
        assert refreshed.url.endswith("/queues/orders?match=$.n%3D500")  # the filter kept
        assert "1 matching message" in refreshed.element("matching")
        assert line["action"] == "show_body"
        assert line["who"] == "local"
        assert line["message_id"] == parked_id
        assert line["queue"] == "orders"
    assert await _visible(aws, parking, 25)


async def test_replay_covers_exactly_the_filter_with_a_backup_first(aws, tmp_path):
    dlq, parking = await _setup(aws)
    async with (
        running_console(settings_for(aws.url), backup_dir=tmp_path) as (url, audit),
        browser(url) as b,
    ):
        job = await b.plan("orders", action="replay", to="dlq", match="$.n=3")
        plan = await b.get(f"/jobs/{job}")
        assert "1 parked message matches" in plan.element("plan-total")
        assert "max_attempts 1" in plan.element("plan-reasons")
        result = await b.confirm(job, rate="100")
        done = await b.finished(result.url.rsplit("/", 1)[1])
        assert "done: 1, failed: 0" in done.element("result")
        backup = done.element("backup").split()[0]
        # the same form sent again (a double click, a second person): refused
        again = await b.post(f"/jobs/{job}/confirm", {"csrf": plan.csrf, "rate": "100"})
        assert again.status == 409, "a plan is confirmed once"
    moved = await drain(aws.sqs, dlq, delete=True)
    assert [json.loads(m["Body"]) for m in moved] == [{"n": 3}]
    lines = (tmp_path / backup.rsplit("/", 1)[1]).read_text().splitlines()
    assert [json.loads(json.loads(x)["body"])["n"] for x in lines] == [3]
    assert await depth(aws.sqs, parking) == 23
    [line] = [x for x in audit_lines(audit) if x["action"] == "replay"]
    assert line["filter"] == {"match": ["$.n=3"]}
    assert line["counts"] == {"matched": 1, "done": 1, "failed": 0}
    assert line["backup"].endswith(backup.rsplit("/", 1)[1])
    assert line["to"] == "dlq"


async def test_a_message_parked_after_the_plan_is_not_touched(aws, tmp_path):
    dlq, parking = await _setup(aws)
    async with (
        running_console(settings_for(aws.url), backup_dir=tmp_path) as (url, _),
        browser(url) as b,
    ):
        job = await b.plan("orders", action="purge", reason="max_attempts")
        await _park(aws, parking, dlq, 3)  # parked after the plan, same filter
        result = await b.confirm(job, rate="100")
        done = await b.finished(result.url.rsplit("/", 1)[1])
        assert "done: 20" in done.element("result")
    assert await depth(aws.sqs, parking) == 4 + 3


async def test_a_plan_that_matched_nothing_cannot_be_confirmed(aws, tmp_path):
    await _setup(aws)
    async with (
        running_console(settings_for(aws.url), backup_dir=tmp_path) as (url, _),
        browser(url) as b,
    ):
        job = await b.plan("orders", action="purge", error="NoSuchError")
        assert 'id="confirm"' not in (await b.get(f"/jobs/{job}")).text
        csrf = (await b.get("/queues/orders")).csrf
        refused = await b.post(f"/jobs/{job}/confirm", {"csrf": csrf})
        assert refused.status == 409
        assert "nothing to do" in refused.element("error")


async def test_export_pause_and_resume(aws, tmp_path):
    dlq, parking = await _setup(aws)
    async with (
        running_console(settings_for(aws.url), backup_dir=tmp_path) as (url, audit),
        browser(url) as b,
    ):
        job = await b.plan("orders", action="export", body_contains='"n": 1')
        result = await b.confirm(job)
        done = await b.finished(result.url.rsplit("/", 1)[1])
        async with b.session.get(f"{url}jobs/{done.url.rsplit('/', 1)[1]}/download") as r:
            assert r.status == 200
            assert "attachment" in r.headers["Content-Disposition"]
            lines = (await r.text()).splitlines()
        found = sorted(json.loads(json.loads(x)["body"])["n"] for x in lines)
        assert found == [1, *range(10, 20)]
        [downloaded] = [x for x in audit_lines(audit) if x["action"] == "download"]
        assert (downloaded["who"], downloaded["queue"]) == ("local", "orders")
        assert downloaded["export"].endswith(".jsonl")
        job = await b.plan("orders", action="pause")
        paused = await b.finished(
            (await b.confirm(job, reason="target migrating")).url.rsplit("/", 1)[1]
        )
        assert "target migrating" in paused.element("result")
        tags = (await aws.sqs.list_queue_tags(QueueUrl=dlq))["Tags"]
        assert tags["retry-worker:paused"] == "true"
        home = await b.get("/")
        assert "target migrating" in home.element("queues")
        job = await b.plan("orders", action="resume")
        await b.finished((await b.confirm(job)).url.rsplit("/", 1)[1])
        assert "retry-worker:paused" not in (await aws.sqs.list_queue_tags(QueueUrl=dlq)).get(
            "Tags", {}
        )
    actions = [x["action"] for x in audit_lines(audit)]
    assert actions == ["export", "download", "pause", "resume"]
    assert await depth(aws.sqs, parking) == 24, "an export moves nothing"
    assert [json.loads(x)["meta"] for x in lines] == [{**META, "source-queue": dlq}] * 11


@pytest.mark.parametrize("spelled", ["name", "url"])
async def test_a_queue_shares_its_parking_queue_with_one_that_cannot_be_read(aws, spelled):
    """billing's DLQ is gone, its messages still parked beside orders': orders' row shows
    its own 20, not the parking queue's 24 (billing was left out of the sharing), whether
    billing names the parking queue as orders does or by its URL."""
    _, parking = await _setup(aws)
    billing = (await aws.sqs.get_queue_url(QueueName="billing-dlq"))["QueueUrl"]
    await aws.sqs.delete_queue(QueueUrl=billing)
    settings = settings_for(aws.url)
    if spelled == "url":
        policy = settings.queues["billing"].policy.model_copy(update={"parking_queue": parking})
        queue = settings.queues["billing"].model_copy(update={"policy": policy})
        settings = settings.model_copy(update={"queues": {**settings.queues, "billing": queue}})
    async with running_console(settings) as (url, _), browser(url) as b:
        home = await b.get("/")
        with anyio.fail_after(30):
            while "reading the shared parking queue" in home.text:
                await anyio.sleep(0.1)
                home = await b.get("/")
    cell = r'href="/queues/(\w+)">.*?<td class="n parked" title="([^"]*)">(\d+)</td>'
    parked = {name: count for name, _, count in re.findall(cell, home.text, re.S)}
    assert parked == {"orders": "20"}
    assert "billing cannot read: billing: its DLQ billing-dlq does not exist" in (
        home.element("queues")
    )


async def test_replay_to_the_target_with_a_transform_lists_what_failed(aws, tmp_path):
    _dlq, parking = await _setup(aws)
    out = (await aws.sqs.get_queue_url(QueueName="out"))["QueueUrl"]
    async with (
        running_console(settings_for(aws.url), backup_dir=tmp_path) as (url, audit),
        browser(url) as b,
    ):
        # null for n <= 17: those fail (TransformFailed.NullResult) and stay parked
        expression = "body.n > `17` && merge(body, {fixed: `true`}) || null"
        job = await b.plan("orders", action="replay", to="target", transform=expression)
        plan = await b.get(f"/jobs/{job}")
        assert "20 parked messages match" in plan.element("plan-total")
        assert expression in plan.element("filter")

        def shown() -> int:
            return sum(x["action"] == "show_body" for x in audit_lines(audit))

        views = shown()  # each view of the plan's page: it shows the transform's preview
        assert views >= 1
        result = await b.confirm(job, rate="100")  # one more look at the plan, then the act
        act = result.url.rsplit("/", 1)[1]
        for _ in range(3):
            await b.get(f"/jobs/{act}")
        done = await b.finished(act)
        assert done.element("result") == "done: 2, failed: 18"
        assert done.element("failed").count("TransformFailed.NullResult") == 18
        # the action's page shows no body (it refreshes every second while it runs): no line
        assert shown() == views + 1
    delivered = sorted(json.loads(m["Body"])["n"] for m in await drain(aws.sqs, out))
    assert delivered == [18, 19]
    assert await depth(aws.sqs, parking) == 24 - 2
    [line] = [x for x in audit_lines(audit) if x["action"] == "replay"]
    assert (line["to"], line["transform"], line["state"]) == ("target", expression, "failed")


async def test_the_queue_list_shows_each_targets_breaker_from_the_table(aws):
    import time

    from worker.emulator import create_coordination_table
    from worker.fleet.table import CoordinationTable

    await _setup(aws)
    dynamodb = await aws.client("dynamodb")
    await create_coordination_table(dynamodb, "rw-coordination")
    table = CoordinationTable(dynamodb, "rw-coordination")
    await table.publish("sqs:out", "replica-1", open_until=time.time() + 600, trips=3)
    coordination = {"backend": "dynamodb", "table": "rw-coordination"}
    settings = settings_for(aws.url, coordination=coordination)
    async with running_console(settings) as (url, _), browser(url) as b:
        rows = (await b.get("/")).element("queues")
    assert rows.count("open until") == 2  # both queues deliver to sqs:out
    assert "(trips 3)" in rows


async def test_a_busy_queue_does_not_crowd_another_out_of_a_shared_parking_queue(aws, monkeypatch):
    """Each DLQ sharing a parking queue keeps its own share of the snapshot: a page of the
    quiet one is not empty because the busy one filled the snapshot first."""
    from worker.console import snapshot

    monkeypatch.setattr(snapshot, "MAX_MESSAGES", 10)
    _, parking = await _setup(aws)  # orders' 20 first, then billing's 4
    async with running_console(settings_for(aws.url)) as (url, _), browser(url) as b:
        orders = await b.get("/queues/orders")
        with anyio.fail_after(30):  # each page waits up to 1 s for the read
            while "Reading the parking queue" in orders.text:
                orders = await b.get("/queues/orders")
        billing = await b.get("/queues/billing")
        assert billing.element("matching").startswith("4 messages")
        assert orders.element("matching").startswith("10 messages")
        assert "the first 10 of this queue's messages read are shown" in orders.element("snapshot")
        assert "shown" not in billing.element("snapshot")
    assert await _visible(aws, parking, 24)


async def test_a_dlq_no_longer_configured_crowds_nobody_out(aws, monkeypatch):
    from worker.console import snapshot

    monkeypatch.setattr(snapshot, "MAX_MESSAGES", 10)
    old = await create_queue(aws.sqs, "old-dlq")  # parked here once, not configured now
    orders = await create_queue(aws.sqs, "orders-dlq")
    billing = await create_queue(aws.sqs, "billing-dlq")
    parking = await create_queue(aws.sqs, "parked")
    await _park(aws, parking, old, 15)
    await _park(aws, parking, orders, 15, first=100)  # two queues full before billing's
    await _park(aws, parking, billing, 4, first=200)
    async with running_console(settings_for(aws.url)) as (url, _), browser(url) as b:
        page = await b.get("/queues/billing")
        with anyio.fail_after(30):
            while "Reading the parking queue" in page.text:
                page = await b.get("/queues/billing")
        assert page.element("matching").startswith("4 messages")
    assert await _visible(aws, parking, 34)


async def test_the_queue_page_says_times_counts_and_the_pause_as_people_do(aws):
    """Issue 34: "1 messages", ISO times only, a green "done" on a plan nothing had acted on
    yet, Pause and Resume both offered whatever the queue's state."""
    from worker.aws.attributes import write_pause
    from worker.aws.sqs import SqsQueue

    dlq = await create_queue(aws.sqs, "orders-dlq")
    await create_queue(aws.sqs, "billing-dlq")
    parking = await create_queue(aws.sqs, "parked")
    await create_queue(aws.sqs, "out")
    await _park(aws, parking, dlq, 1)  # parked at META's time, 2026-05-28
    async with running_console(settings_for(aws.url)) as (url, _), browser(url) as b:
        page = await b.get("/queues/orders")
        assert page.element("matching") == "1 message"
        [parked_at] = re.findall(
            r'<time datetime="([^"]+)" title="\1">(\d+d ago)</time>', page.text
        )[-1:]
        assert parked_at[0] == "2026-05-28T20:26:40+00:00"
        assert "receiving" in page.element("receiving")
        assert 'id="plan-pause"' in page.text
        assert 'id="plan-resume"' not in page.text
        job = await b.plan("orders", action="replay", to="dlq")
        plan = await b.get(f"/jobs/{job}")
        assert plan.element("state") == "planned: nothing has changed yet"
        assert plan.element("plan-total") == "1 parked message matches."
        await write_pause(SqsQueue(aws.sqs, dlq), "ledger migration")
        paused = await b.get("/queues/orders")
        said = paused.element("receiving")
        assert said.startswith("paused: no replica receives from the DLQ (20")  # since when
        assert said.endswith(" ledger migration)")
        assert 'id="plan-resume"' in paused.text
        assert 'id="plan-pause"' not in paused.text


@pytest.mark.parametrize("log_bodies", [False, True])
async def test_a_person_edits_one_of_ten_parked_messages_and_replays_it(aws, tmp_path, log_bodies):
    """Issue 34: from a message's page, edit its body and replay it: the plan shows the
    diff, the DLQ gets exactly the edited copy, the backup keeps the original, the other
    nine stay parked. A body that is not JSON, or an edit for two messages, is refused. The
    audit line has the edited body only with `logging.log_bodies`, its hash always."""
    dlq, parking = await _parked(aws, 10)  # m0..m9, bodies {"n": i}
    edited = '{"n": 3, "currency": "EUR"}'
    settings = settings_for(aws.url, logging={"log_bodies": log_bodies})
    async with (
        running_console(settings, backup_dir=tmp_path) as (url, audit),
        browser(url) as b,
    ):
        one = await b.get("/queues/orders?match=%24.n%3D3")
        [parked_id] = re.findall(r'/queues/orders/messages/([^"]+)"', one.text)
        page = await b.post(f"/queues/orders/messages/{parked_id}/body", {"csrf": one.csrf})
        assert 'id="edit-body"' in page.text
        assert 'id="plan-purge-one"' in page.text
        # in the page, not in its <title> (where a browser shows them as text)
        [title] = re.findall(r"<title>(.*?)</title>", page.text, re.S)
        assert "<form" not in title
        assert "csrf" not in title
        nan = await b.post(
            "/queues/orders/plan",
            {"csrf": page.csrf, "action": "replay", "id": parked_id, "body": '{"n": NaN}'},
        )
        assert nan.status == 400
        bad = await b.post(
            "/queues/orders/plan",
            {"csrf": page.csrf, "action": "replay", "id": parked_id, "body": "{not json"},
        )
        assert bad.status == 400
        assert "the edited body is not JSON" in bad.text
        two = [("csrf", page.csrf), ("action", "replay"), ("id", parked_id), ("id", "x")]
        refused = await b.post("/queues/orders/plan", [*two, ("body", edited)])
        assert refused.status == 400
        job = await b.plan("orders", action="replay", to="dlq", id=parked_id, body=edited)
        plan = await b.get(f"/jobs/{job}")
        assert plan.element("plan-total") == "1 parked message matches."
        assert "goes exactly as written" in plan.element("edit-hint")
        diff = plan.element("diff")
        assert '+ "currency": "EUR"' in diff

        # the plan shows the parked body: audited at each view, as its own page is
        def shown() -> list[tuple[str, str]]:
            lines = audit_lines(audit)
            return [(x["message_id"], x.get("by")) for x in lines if x["action"] == "show_body"]

        seen = len(shown())
        await b.get(f"/jobs/{job}")  # another look (another person, or the same)
        assert shown()[seen:] == [(parked_id, "plan")]
        result = await b.confirm(job, rate="100")
        done = await b.finished(result.url.rsplit("/", 1)[1])
        assert "done: 1, failed: 0" in done.element("result")
        backup = done.element("backup").split()[0]
    moved = await drain(aws.sqs, dlq, delete=True)
    assert [m["Body"] for m in moved] == [edited]  # exactly the edited copy, once
    lines = (tmp_path / backup.rsplit("/", 1)[1]).read_text().splitlines()
    [saved] = [json.loads(x) for x in lines]
    assert json.loads(saved["body"]) == {"n": 3}  # the original
    assert saved["sent_as"] == edited  # and what was sent instead: the record is the backup
    assert await depth(aws.sqs, parking) == 9
    [line] = [x for x in audit_lines(audit) if x["action"] == "replay"]
    if log_bodies:
        assert line["edited_body"] == edited
    else:  # a body is not for the audit log unless bodies are logged (nor its hash: a short
        # one is guessed back from it); its size is
        assert "edited_body" not in line
        assert edited not in json.dumps(line)
    assert line["edited_body_bytes"] == len(edited.encode())
    assert line["backup"].endswith(backup.rsplit("/", 1)[1])


async def test_an_edit_the_dlq_would_refuse_is_refused_at_the_plan(aws, tmp_path, monkeypatch):
    """An edited body that, with the attributes that go with it, is over the DLQ's
    MaximumMessageSize is said at the plan, naming the sizes and the queue; nothing is
    planned, the message stays parked."""
    dlq = await create_queue(aws.sqs, "orders-dlq", MaximumMessageSize="1024")
    await create_queue(aws.sqs, "billing-dlq")
    parking = await create_queue(aws.sqs, "parked")
    note = {"note": {"DataType": "String", "StringValue": "x" * 600}}  # 610 bytes
    original = DlqMessage("m0", "r", json.dumps({"n": 0}), attributes=note)
    parked = build_parked(original, {**META, "source-queue": dlq})
    assert parked is not None
    await aws.sqs.send_message(
        QueueUrl=parking, MessageBody=parked.body, MessageAttributes=parked.attributes
    )
    big = json.dumps({"n": 0, "note": "y" * 400})  # 420 bytes: alone it would fit
    async with (
        running_console(settings_for(aws.url), backup_dir=tmp_path) as (url, audit),
        browser(url) as b,
    ):
        page, parked_id = await _the_one_parked(b)
        form = {"csrf": page.csrf, "action": "replay", "to": "dlq", "id": parked_id}
        refused = await b.post("/queues/orders/plan", {**form, "body": big})
        assert refused.status == 400
        said = (
            "the edited body is 1,030 bytes with the message&#39;s attributes: the DLQ orders-dlq"
        )
        assert said in refused.text
        assert "1,024 bytes" in refused.text
        fits = await b.post("/queues/orders/plan", {**form, "body": '{"n": 0}'})
        assert fits.status == 200
        assert "/jobs/" in str(fits.url)
        # the page's snapshot has not read the message yet (a refresh of a large queue): the
        # plan's own read of it refuses the edit, and there is nothing to confirm
        from worker.console.snapshot import Snapshot

        monkeypatch.setattr(Snapshot, "find", lambda self, message_id: None)
        late = await b.post("/queues/orders/plan", {**form, "body": big})
        assert late.status == 200
        planned = await b.finished(late.url.rsplit("/jobs/", 1)[1])
        assert planned.element("state") == "failed"
        assert said in planned.text
        assert 'id="confirm"' not in planned.text
        assert 'id="diff"' not in planned.text  # and no body shown: none audited
        assert [x for x in audit_lines(audit) if x["action"] == "show_body"] == []
    assert await depth(aws.sqs, parking) == 1


async def test_an_edit_with_a_character_sqs_refuses_is_refused_at_the_plan(aws, tmp_path):
    """A form part's charset is the client's choice: one declared `unicode_escape` decodes to
    half a surrogate pair, which SQS refuses and which crashed the console's audit line after
    the replay. Such a body, or a control character, is refused at the plan."""
    _, parking = await _parked(aws, 1)
    async with (
        running_console(settings_for(aws.url), backup_dir=tmp_path) as (url, audit),
        browser(url) as b,
    ):
        page, parked_id = await _the_one_parked(b)
        fields = {"csrf": page.csrf, "action": "replay", "to": "target", "id": parked_id}
        data = b""
        for name, value in fields.items():
            data += (
                f'--B\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            )
        data += b'--B\r\nContent-Disposition: form-data; name="body"\r\n'
        data += (
            b'Content-Type: text/plain; charset=unicode_escape\r\n\r\n{"n": "\\ud800"}\r\n--B--\r\n'
        )
        headers = {"Content-Type": "multipart/form-data; boundary=B"}
        async with b.session.post(b.base + "/queues/orders/plan", data=data, headers=headers) as r:
            assert r.status == 400
            assert "a character SQS refuses" in await r.text()
        control = await b.post("/queues/orders/plan", {**fields, "body": '{"n": "\u0001"}'})
        assert control.status == 400
        assert "&#39;\\x01&#39;, a character SQS refuses" in control.text
        assert (await b.get("/")).status == 200  # the console goes on
    assert await depth(aws.sqs, parking) == 1
    assert [x for x in audit_lines(audit) if x["action"] == "replay"] == []  # nothing done


# aiohttp warns that a body over 1 MiB sent as bytes may hold its loop: the test's client
@pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")
async def test_an_edit_as_large_as_sqs_takes_fits_the_edit_form(aws, tmp_path):
    """The edit form is sent as multipart: a body of 600 KB in CJK (1.8 MB URL-encoded,
    refused with aiohttp's bare 413) is planned; a form over the limit is refused by a page
    that says why."""
    import aiohttp

    _, parking = await _parked(aws, 1)
    big = json.dumps({"n": 0, "note": "注" * 200_000}, ensure_ascii=False)  # 600 KB
    async with (
        running_console(settings_for(aws.url), backup_dir=tmp_path) as (url, _),
        browser(url) as b,
    ):
        page, parked_id = await _the_one_parked(b)
        shown = await b.post(f"/queues/orders/messages/{parked_id}/body", {"csrf": page.csrf})
        assert 'enctype="multipart/form-data"' in shown.text  # the edit form
        fields = {"csrf": page.csrf, "action": "replay", "to": "dlq", "id": parked_id}

        async def send(body: str) -> tuple[int, str, str]:
            form = aiohttp.FormData(default_to_multipart=True)
            for name, value in {**fields, "body": body}.items():
                form.add_field(name, value, content_type="text/plain; charset=utf-8")
            async with b.session.post(b.base + "/queues/orders/plan", data=form) as r:
                return r.status, await r.text(), str(r.url)

        status, text, at = await send(big)
        assert status == 200, text
        planned = await b.finished(at.rsplit("/jobs/", 1)[1])
        assert planned.element("plan-total") == "1 parked message matches."
        # a browser's CRLF line breaks: 300,000 lines of a 0.9 MB body are 1.2 MB on the wire
        status, text, at = await send("[" + "\r\n".join(["1,"] * 300_000) + "1]")
        assert status == 200, text
        status, text, _ = await send(json.dumps({"note": "x" * (2200 * 1024)}))
        assert status == 413
        assert "the form is over 2,162,688 bytes: an edited body fits SQS's 1 MiB" in text
    assert await depth(aws.sqs, parking) == 1


async def test_an_action_on_messages_no_longer_parked_says_nothing_changed(aws, tmp_path):
    _, parking = await _parked(aws, 1)
    async with (
        running_console(settings_for(aws.url), backup_dir=tmp_path) as (url, _),
        browser(url) as b,
    ):
        job = await b.plan("orders", action="purge")
        await drain(aws.sqs, parking, delete=True)  # someone else took it meanwhile
        result = await b.confirm(job)
        done = await b.finished(result.url.rsplit("/", 1)[1])
    assert done.element("state") == "done"  # not a failure: someone else moved it first
    assert "none of the planned messages is parked any more" in done.element("job-notice")


async def test_the_queue_page_stands_when_the_pause_tag_cannot_be_read(aws, proxy):
    from worker.emulator.proxy import Rule

    await _parked(aws, 1)
    proxy.add(Rule("sqs", "ListQueueTags", "error", 403, "AccessDenied"))
    async with running_console(settings_for(proxy.url)) as (url, _), browser(url) as b:
        page = await b.get("/queues/orders")
    assert page.status == 200
    assert page.element("receiving") == "whether it is paused cannot be read (AccessDenied)"
