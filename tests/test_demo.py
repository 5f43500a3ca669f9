"""`make run`'s demo, run briefly as a process: it shows a delivery, a retry and a parking."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_shows_delivery_retry_and_parking():
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRY_WORKER_")}
    result = subprocess.run(
        [sys.executable, "-m", "worker", "demo", "--duration", "20"],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    done = re.search(r"\[demo\] done: (.*)", result.stderr)
    assert done, result.stderr[-3000:]
    counts = dict(pair.split("=") for pair in done.group(1).split())
    assert int(counts["delivered"]) >= 1
    assert int(counts["deferred"]) >= 1
    assert int(counts["parked"]) >= 1
    assert int(counts["transformed"]) >= 1
    assert int(counts["ruled"]) >= 1
    # a retry that succeeded: a delivery on a later attempt
    assert re.search(r"delivered\s+attempt=[2-9]", result.stderr)
    assert "reason=max_attempts" in result.stderr
    # the orders queue's rule parks the big orders, its transform marks the rest
    assert re.search(r"rule_matched .*reason=manual_review", result.stderr)
