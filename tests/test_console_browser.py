"""The console as a person uses it: `retry-worker console` as a process, clicked through in
headless Chromium (Debian's chromium and chromium-driver, installed by `make tools`; never a
browser download). Queue list → a queue → a JSONPath filter → plan a replay → confirm → the
result, then the messages and the backup checked on the emulator; the login form; read-only.

With RW_SCREENSHOTS=DIR (`make screenshots`: docs/console) it keeps its screenshots there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest
import yaml

from tests.helpers import depth, drain, free_port
from tests.test_console import settings_for
from tests.test_operator_safety import _park
from worker.emulator import create_queue

# What the function said of the orders' failures, kept with them (SPEC.md, Error detail).
SAID = {
    "error": "FunctionError.Unhandled",
    "error-type": "PaymentDeclined",
    "error-message": "card 4242 declined by the issuer: insufficient funds",
}


async def _setup(aws) -> tuple[str, str]:
    """20 parked orders (m0..m19) whose function said why, 4 of billing's, one parking queue."""
    dlq = await create_queue(aws.sqs, "orders-dlq")
    billing = await create_queue(aws.sqs, "billing-dlq")
    parking = await create_queue(aws.sqs, "parked")
    await create_queue(aws.sqs, "out")
    await _park(aws, parking, dlq, 20, **SAID)
    await _park(aws, parking, billing, 4)
    return dlq, parking


pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.tools, pytest.mark.timeout(240)]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "console-browser-test-token"


@contextmanager
def console_process(
    tmp_path: Path, endpoint: str, *args: str, name: str = "console"
) -> Iterator[str]:
    tree = settings_for(endpoint).model_dump(mode="json")
    tree.pop("discovery", None)
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(tree))
    port = free_port()
    command = [sys.executable, "-m", "worker", "console", "--config", str(config)]
    command += ["--listen", f"127.0.0.1:{port}", "--backup-dir", str(tmp_path), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRY_WORKER_")}
    env["RETRY_WORKER_CONFIG_DIR"] = str(tmp_path)
    log = (tmp_path / f"{name}.log").open("w")
    process = subprocess.Popen(command, stderr=log, stdout=log, env=env, text=True)
    try:
        _wait_listening(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def _wait_listening(port: int, process: subprocess.Popen[str]) -> None:
    import socket
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the console exited"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)  # polling a condition (the port), with a deadline
    raise AssertionError("the console did not listen within 30 s")


@contextmanager
def chromium(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # without the background-networking flags Chromium keeps dialling Google's hosts
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    os.environ.setdefault("SE_AVOID_STATS", "true")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class Person:
    """What a person does in the browser, one step a method."""

    def __init__(self, driver: object, base: str, shots: Path) -> None:
        self.d = driver
        self.base = base
        self.shots = shots

    def open(self, path: str) -> None:
        self.d.get(self.base + path)  # type: ignore[attr-defined]

    def click(self, element_id: str) -> None:
        from selenium.webdriver.common.by import By

        self.d.find_element(By.ID, element_id).click()  # type: ignore[attr-defined]

    def submit(self, element_id: str, then: str) -> None:
        """Click what leaves the page, and wait for the next page's `then`: a click may
        return before the browser has left the page it was on."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        page = self.d.find_element(By.TAG_NAME, "html")  # type: ignore[attr-defined]
        self.click(element_id)
        WebDriverWait(self.d, 60, poll_frequency=0.1).until(expected_conditions.staleness_of(page))
        self.wait_for(then)

    def type(self, element_id: str, text: str) -> None:
        from selenium.webdriver.common.by import By

        field = self.d.find_element(By.ID, element_id)  # type: ignore[attr-defined]
        field.clear()
        field.send_keys(text)

    def text(self, element_id: str) -> str:
        from selenium.webdriver.common.by import By

        return str(self.d.find_element(By.ID, element_id).text)  # type: ignore[attr-defined]

    def has(self, element_id: str) -> bool:
        from selenium.webdriver.common.by import By

        return bool(self.d.find_elements(By.ID, element_id))  # type: ignore[attr-defined]

    def link(self, text: str) -> None:
        from selenium.webdriver.common.by import By

        self.d.find_element(By.LINK_TEXT, text).click()  # type: ignore[attr-defined]

    def wait_for(self, element_id: str, timeout: float = 60) -> None:
        """The page refreshes itself while a job runs: wait for an element of its end."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        located = expected_conditions.presence_of_element_located((By.ID, element_id))
        WebDriverWait(self.d, timeout, poll_frequency=0.2).until(located)

    def shot(self, name: str) -> None:
        self.d.save_screenshot(str(self.shots / f"{name}.png"))  # type: ignore[attr-defined]


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("RW_SCREENSHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _replay_by_clicking(person: Person) -> str:
    person.open("/")
    person.shot("queues")
    person.link("orders")
    person.wait_for("refresh")  # the snapshot is read (the page refreshed itself meanwhile)
    assert "20 messages" in person.text("matching")
    # grouped by what the function said, the message beside its type
    assert "PaymentDeclined 20 card 4242 declined" in person.text("by-error-type")
    person.shot("errors")
    person.type("match", "$.n=7")
    person.submit("apply", then="matching")
    assert "1 matching message" in person.text("matching")
    person.shot("queue")
    person.click("plan-replay")  # to the DLQ, the default
    person.wait_for("plan-total")
    assert "1 parked message matches" in person.text("plan-total")
    assert "match=$.n=7" in person.text("filter")
    person.shot("plan")
    person.click("confirm")
    person.wait_for("result")
    assert "done: 1, failed: 0" in person.text("result")
    person.shot("result")
    return person.text("backup").split()[0]


EDITED = '{"n": 3, "currency": "EUR"}'


def _edit_by_clicking(person: Person) -> str:
    """From m3's page: show its body, edit it, plan (the diff), confirm."""
    person.open("/queues/orders?match=%24.n%3D3")
    person.wait_for("messages")
    person.d.find_element("css selector", "#messages a").click()  # type: ignore[attr-defined]
    person.wait_for("show-body")
    person.submit("show-body", then="edit-body")
    person.type("edit-body", EDITED)
    person.shot("message")
    person.submit("plan-edit", then="state")
    person.wait_for("diff")
    assert '+  "currency": "EUR"' in person.text("diff")
    person.shot("edit-plan")
    person.click("confirm")
    person.wait_for("result")
    assert "done: 1, failed: 0" in person.text("result")
    return person.text("backup").split()[0]


async def test_a_person_replays_one_filtered_message_in_the_browser(aws, tmp_path):
    dlq, parking = await _setup(aws)
    shots = _shots(tmp_path)

    def flow() -> tuple[str, str]:
        with console_process(tmp_path, aws.url) as base, chromium(tmp_path) as driver:
            person = Person(driver, base, shots)
            return _replay_by_clicking(person), _edit_by_clicking(person)

    backup, edit_backup = await anyio.to_thread.run_sync(flow)
    moved = await drain(aws.sqs, dlq, delete=True)
    # the replayed one, and exactly the edited copy of the other (never its original)
    assert sorted(m["Body"] for m in moved) == sorted(['{"n": 7}', EDITED])
    assert await depth(aws.sqs, parking) == 22
    saved = Path(backup).read_text().splitlines()
    assert [json.loads(json.loads(line)["body"]) for line in saved] == [{"n": 7}]
    originals = Path(edit_backup).read_text().splitlines()
    assert [json.loads(json.loads(line)["body"]) for line in originals] == [{"n": 3}]
    lines = (tmp_path / "console.log").read_text().splitlines()
    audit = [json.loads(x) for x in lines if x.startswith("{")]
    acted = [x for x in audit if x.get("event") == "audit" and x["action"] != "show_body"]
    assert [x["action"] for x in acted] == ["replay", "replay"]
    assert acted[1]["edited_body_bytes"] == len(EDITED.encode())
    assert [json.loads(line)["sent_as"] for line in originals] == [EDITED]


async def test_the_login_form_and_read_only_in_the_browser(aws, tmp_path):
    await _setup(aws)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# who may act\nalice:{TOKEN}\n")
    shots = tmp_path / "shots"
    shots.mkdir()

    def flow() -> None:
        with chromium(tmp_path) as driver:
            with console_process(tmp_path, aws.url, "--auth-token-file", str(tokens)) as base:
                person = Person(driver, base, shots)
                person.open("/queues/orders")
                assert person.has("token"), "the login form, not the page"
                person.type("token", "not-the-token-at-all")
                person.click("login")
                person.wait_for("login-failed")  # the click may return before the page does
                person.type("token", TOKEN)
                person.click("login")
                person.wait_for("refresh")  # back where the person was going
                assert "signed in as alice" in person.text("who")
                assert person.has("plan-replay")
            args = ("--read-only",)
            with console_process(tmp_path, aws.url, *args, name="read-only") as base:
                person = Person(driver, base, shots)
                person.open("/queues/orders")
                person.wait_for("refresh")
                assert person.has("read-only")
                assert not person.has("plan-replay")
                assert not person.has("plan-purge")

    await anyio.to_thread.run_sync(flow)
