"""`make run`'s demo, run briefly as a process: it shows a delivery, a retry and a parking."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def test_demo_shows_delivery_retry_and_parking():
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRY_WORKER_")}
    command = [sys.executable, "-m", "worker", "demo", "--duration", "20"]
    command += ["--console-listen", "127.0.0.1:0"]
    lines = []
    pages = {}
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env) as process:
        assert process.stderr is not None
        for line in process.stderr:  # ends when the demo does (it stops itself after 20 s)
            lines.append(line)
            console = re.search(r"\[demo\] console (http://\S+/)", line)
            if console:  # a newcomer opens it while the demo runs
                for path in ("", "queues/orders"):
                    with urllib.request.urlopen(console.group(1) + path, timeout=30) as page:
                        pages[path] = (page.status, page.read().decode())
        assert process.wait(timeout=90) == 0
    stderr = "".join(lines)
    assert pages[""][0] == 200, "the console answered"
    assert "payments" in pages[""][1]
    assert "parked messages" in pages["queues/orders"][1]
    result = subprocess.CompletedProcess(command, 0, "", stderr)
    done = re.search(r"\[demo\] done: (.*)", result.stderr)
    assert done, result.stderr[-3000:]
    counts = dict(pair.split("=") for pair in done.group(1).split())
    assert all(int(v) >= 1 for k, v in counts.items() if k != "in_flight"), done.group(0)
    assert int(counts["delivered"]) >= 1
    assert int(counts["deferred"]) >= 1
    assert int(counts["parked"]) >= 1
    assert int(counts["transformed"]) >= 1
    assert int(counts["ruled"]) >= 1
    # a retry that succeeded: a delivery on a later attempt
    assert re.search(r"delivered\s+attempt=[2-9]", result.stderr)
    assert "reason=max_attempts" in result.stderr
    # the digest of what was parked, as the local webhook (a Slack channel) shows it
    slack = r"\[slack\] \*retry-worker\*: \d+ messages? parked from `ledger`: `max_attempts`\n"
    slack += r"\s+error `FunctionError.Unhandled`, type `LedgerLocked`\n\s+said `ledger closed"
    assert re.search(slack, result.stderr), result.stderr[-3000:]
    # the orders queue's rule parks the big orders, its transform marks the rest
    assert re.search(r"rule_matched .*reason=manual_review", result.stderr)
