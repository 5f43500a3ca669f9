"""`make run`'s demo, run briefly as a process: it shows a delivery, a retry and a parking,
and the operator commands it prints work, as printed, from a second terminal."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def second_terminal(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A command as the demo printed it, run as a newcomer pastes it: in a shell without
    AWS credentials or retry-worker settings of its own, wherever that shell is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETRY_WORKER_", "AWS_"))}
    words = shlex.split(line)
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_demo_shows_delivery_retry_and_parking(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRY_WORKER_")}
    command = [sys.executable, "-m", "worker", "demo", "--duration", "20"]
    command += ["--console-listen", "127.0.0.1:0"]
    lines = []
    pages = {}
    printed: list[str] = []
    expecting = 0
    ran = []
    demo = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    with demo as process:
        assert process.stderr is not None
        for line in process.stderr:  # ends when the demo does (it stops itself after 20 s)
            lines.append(line)
            if expecting:  # status, parked summary, explain: pasted while the demo runs
                printed.append(line.strip())
                expecting -= 1
                if not expecting:
                    elsewhere = tmp_path / "a second terminal"  # not the demo's directory
                    elsewhere.mkdir()
                    ran = [second_terminal(said, elsewhere) for said in printed]
            if "[demo] from a second terminal" in line:
                expecting = 3
            console = re.search(r"\[demo\] console (http://\S+/)", line)
            if console:  # a newcomer opens it while the demo runs
                for path in ("", "queues/orders"):
                    with urllib.request.urlopen(console.group(1) + path, timeout=30) as page:
                        pages[path] = (page.status, page.read().decode())
        assert process.wait(timeout=90) == 0
    stderr = "".join(lines)
    status, summary, explained = ran
    assert status.returncode == 0, status.stderr
    assert re.search(r"^orders\s+\d+", status.stdout, re.MULTILINE), status.stdout
    assert summary.returncode == 0, summary.stderr
    assert "parked messages from orders" in summary.stdout
    assert explained.returncode == 0, explained.stderr
    assert "final: park (by rule), reason manual_review" in explained.stdout
    # progress, not a line per message (--verbose has those)
    assert not re.search(r"\] (delivered|deferred) ", stderr)
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
    # fulfilment executions failed at `Ship`; once the carrier is back they are redriven
    # from there (the emulator's RedriveExecution, through aiobotocore)
    assert "[demo] the carrier is back" in stderr
    # one redrive line as an example, not one per execution
    assert len(re.findall(r"execution_redriven .*queue=fulfilment", stderr)) == 1, stderr[-3000:]
    # the digest of what was parked, as the local webhook (a Slack channel) shows it
    slack = r"\[slack\] \*retry-worker\*: \d+ messages? parked from `ledger`: `max_attempts`\n"
    slack += r"\s+error `FunctionError.Unhandled`, type `LedgerLocked`\n\s+said `ledger closed"
    assert re.search(slack, result.stderr), result.stderr[-3000:]
    # (what the summary counts depends on who else reads the parking queue at that moment:
    # the keeper and the console hold what they read; the `ruled` count says the rule ran)
