"""The chaos test: the daemon as a process, 2,000 messages over 4 queues and 3 target kinds
(one a FIFO DLQ to a FIFO queue), 10 % of AWS calls failing before AWS acts (throttles, 500s,
resets) and 3 % after it acted (the answer lost), one target failing 30 % of deliveries, and
the daemon killed with SIGKILL at 5 random moments. Nothing may go missing; each id reaches its
own target and no other, delivered or parked, not both; the FIFO target sees no duplicate and
each group in order; the others see at most what was in flight at each kill (read from the
daemon just before it, receives held) plus what the daemon reported it could not delete plus
what a lost answer to a delivery repeated."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import depth, drain, free_port, wait_for
from tests.test_http import aget
from worker.emulator import ROLE_ARN, create_function, create_queue
from worker.emulator.proxy import FaultProxy, Rule

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(600)]

MESSAGES = 2000
KILLS = 5
CONCURRENCY = 10
QUEUES = ("to-sqs", "to-sfn", "to-lambda", "to-fifo")
DEFINITION = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})


def chaos_rules(proxy: FaultProxy) -> list[Rule]:
    """About 10 % of every AWS call fails before AWS acts and 3 % after (the answer lost); the
    Lambda target fails 30 % of deliveries. Returns the after-rules on deliveries (each may
    repeat what its request carried)."""
    repeats = [
        proxy.add(Rule("sqs", "SendMessageBatch", "error", after=True, probability=0.03)),
        proxy.add(Rule("lambda", "Invoke", "reset", after=True, probability=0.03)),
    ]
    proxy.add(Rule("states", "StartExecution", "error", after=True, probability=0.03))
    proxy.add(Rule("sqs", "DeleteMessageBatch", "reset", after=True, probability=0.03))
    proxy.add(Rule("sqs", "ChangeMessageVisibilityBatch", "error", after=True, probability=0.03))
    proxy.add(Rule("*", None, "error", status=400, code="ThrottlingException", probability=0.04))
    proxy.add(Rule("*", None, "error", status=500, code="InternalFailure", probability=0.03))
    proxy.add(Rule("*", None, "reset", probability=0.03))
    proxy.add(Rule("lambda", "Invoke", "function_error", probability=0.3))
    return repeats


def config(tmp_path: Path, endpoint: str, machine_arn: str, port: int) -> Path:
    tree = {
        "aws": {"endpoint_url": endpoint, "read_timeout_seconds": 10, "sdk_max_attempts": 3},
        "http": {"host": "127.0.0.1", "port": port},
        "shutdown": {"grace_seconds": 5},
        "defaults": {
            "concurrency": CONCURRENCY,
            "receive": {"wait_seconds": 1, "visibility_timeout_seconds": 4},
            "policy": {
                "max_attempts": 12,
                "backoff": {"initial_seconds": 0.2, "multiplier": 2, "max_seconds": 2},
                "parking_queue": "chaos-parked",
            },
            "rate_limit": {"per_second": 1000, "burst": 1000},
            "circuit_breaker": {"minimum_calls": 20, "failure_rate_threshold": 0.9},
        },
        "queues": {
            "to-sqs": {"name": "to-sqs-dlq", "target": {"kind": "sqs", "queue": "chaos-out"}},
            "to-sfn": {
                "name": "to-sfn-dlq",
                "target": {"kind": "stepfunctions", "state_machine_arn": machine_arn},
            },
            "to-lambda": {
                "name": "to-lambda-dlq",
                "target": {"kind": "lambda", "function": "chaos"},
            },
            "to-fifo": {
                "name": "to-fifo-dlq.fifo",
                "target": {"kind": "sqs", "queue": "chaos-out.fifo"},
            },
        },
    }
    path = tmp_path / "chaos.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def start(tmp_path: Path, cfg: Path, run: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRY_WORKER_")}
    env["RETRY_WORKER_CONFIG_DIR"] = str(tmp_path)
    with (tmp_path / f"run-{run}.log").open("wb") as log:  # the child keeps its own handle
        return subprocess.Popen(
            [sys.executable, "-m", "worker", "run", "--config", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def dlq_name(queue: str) -> str:
    return f"{queue}-dlq.fifo" if queue == "to-fifo" else f"{queue}-dlq"


async def seed(aws) -> dict[str, str]:
    urls = {}
    for q in QUEUES:
        fifo = {"FifoQueue": "true"} if q == "to-fifo" else {}
        urls[q] = await create_queue(aws.sqs, dlq_name(q), **fifo)
    for start_id in range(0, MESSAGES, 10):
        queue = QUEUES[(start_id // 10) % len(QUEUES)]
        entries = []
        for i in range(start_id, start_id + 10):
            entry = {"Id": str(i), "MessageBody": json.dumps({"id": i})}
            if queue == "to-fifo":
                entry.update(MessageGroupId=f"g{i % 7}", MessageDeduplicationId=f"d{i}")
            entries.append(entry)
        await aws.sqs.send_message_batch(QueueUrl=urls[queue], Entries=entries)
    return urls


def undeleted(tmp_path: Path) -> int:
    """Messages the daemon logged it could not delete (after retries): each comes back and
    may be delivered again — a duplicate the daemon reported, not one it hid."""
    count = 0
    for log in tmp_path.glob("run-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if '"settle_entry_failed"' in line and '"DeleteMessageBatch"' in line:
                count += 1
    return count


async def executions(aws, arn: str) -> list[dict]:
    found, kwargs = [], {"stateMachineArn": arn, "maxResults": 1000}
    while True:
        page = await aws.sfn.list_executions(**kwargs)
        found += page["executions"]
        if not page.get("nextToken"):
            return found
        kwargs["nextToken"] = page["nextToken"]


async def test_nothing_is_lost_through_faults_and_kills(aws, proxy, tmp_path):
    proxy.keep_journal = True
    await create_function(aws.lambda_, "chaos")
    machine = await aws.sfn.create_state_machine(
        name="chaos", definition=DEFINITION, roleArn=ROLE_ARN
    )
    out = await create_queue(aws.sqs, "chaos-out")
    fifo_out = await create_queue(
        aws.sqs, "chaos-out.fifo", FifoQueue="true", ContentBasedDeduplication="false"
    )
    parked = await create_queue(aws.sqs, "chaos-parked")
    urls = await seed(aws)
    port = free_port()
    cfg = config(tmp_path, proxy.url, machine["stateMachineArn"], port)
    repeating = chaos_rules(proxy)
    rng = random.Random(2024)
    in_flight_at_kills = []

    for run in range(KILLS):
        process = start(tmp_path, cfg, run)
        target = proxy.count() + rng.randint(100, 600)  # a random moment, in calls made
        try:
            await wait_for(lambda n=target: proxy.count() >= n, timeout=120)
            # Every new receive held until the kill: none arrives between reading the
            # daemon's in-flight gauge and the kill.
            hold = proxy.add(Rule("sqs", "ReceiveMessage", "delay", seconds=3600), first=True)
            in_flight_at_kills.append(await in_flight_now(proxy, port))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        proxy.remove(hold)
        proxy.drop_held()

    process = start(tmp_path, cfg, KILLS)
    try:

        async def drained() -> bool:
            return all([await depth(aws.sqs, url) == 0 for url in urls.values()])

        await wait_for(drained, timeout=400, interval=0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        process.kill()

    injected = sum(r.applied for r in proxy.rules)
    repeated = sum(r.applied for r in repeating)
    proxy.rules.clear()
    sent_to_sqs = [json.loads(m["Body"])["id"] for m in await drain(aws.sqs, out)]
    fifo_messages = await drain(aws.sqs, fifo_out, delete=True)
    sent_to_fifo = [json.loads(m["Body"])["id"] for m in fifo_messages]
    invoked = [b["id"] for b in proxy.accepted_requests("lambda", "Invoke")]
    started = []
    for execution in await executions(aws, machine["stateMachineArn"]):
        described = await aws.sfn.describe_execution(executionArn=execution["executionArn"])
        started.append(json.loads(described["input"])["id"])
    parked_ids = [json.loads(m["Body"])["id"] for m in await drain(aws.sqs, parked)]

    deliveries = sent_to_sqs + invoked + started + sent_to_fifo
    delivered = set(deliveries)
    missing = set(range(MESSAGES)) - delivered - set(parked_ids)
    duplicates = len(deliveries) - len(delivered)
    fifo_duplicates = len(sent_to_fifo) - len(set(sent_to_fifo))
    reported = undeleted(tmp_path)
    # What can come back: each kill's in-flight messages (the daemon's own gauge, read with
    # receives held), every message whose delete the daemon reported failed, and what a
    # delivery whose answer was lost carried (a batch of 10 at most; one Invoke).
    # (+ one receive per queue whose answer was on its way when the gauge was read).
    bound = sum(in_flight_at_kills) + KILLS * len(QUEUES) * 10 + reported + 10 * repeated
    print(
        f"\nchaos: {len(delivered)} delivered, {len(parked_ids)} parked, {len(missing)} missing, "
        f"{duplicates} duplicate deliveries after {KILLS} kills (bound {bound}: in flight "
        f"{in_flight_at_kills}, {reported} reported undeleted, {repeated} lost answers to "
        f"deliveries), {fifo_duplicates} at the FIFO target; {proxy.count()} AWS calls, "
        f"{injected} injected faults"
    )
    assert not missing
    assert delivered.isdisjoint(parked_ids), "a message both delivered and parked"
    # 12 attempts against a 30 % failure rate: a park is a one-in-a-million event per message
    assert len(parked_ids) <= 2
    for queue, ids in (
        ("to-sqs", sent_to_sqs),
        ("to-lambda", invoked),
        ("to-sfn", started),
        ("to-fifo", sent_to_fifo),
    ):
        strays = {i for i in ids if QUEUES[(i // 10) % len(QUEUES)] != queue}
        assert not strays, f"{queue}'s target got other queues' ids: {sorted(strays)[:5]}"
    for group in range(7):
        order = [i for i in sent_to_fifo if i % 7 == group]
        assert order == sorted(order), f"FIFO group g{group} out of order"
    assert fifo_duplicates == 0
    assert duplicates <= bound
    assert len(started) == len(set(started)), "Step Functions names make replays harmless"
    assert len(in_flight_at_kills) == KILLS


async def in_flight_now(proxy: FaultProxy, port: int) -> int:
    """The daemon's messages in flight, once every receive still under way has answered (new
    ones are held at the proxy)."""
    await wait_for(lambda: proxy.in_flight[("sqs", "ReceiveMessage")] == proxy.held, timeout=30)
    _, text = await aget(f"http://127.0.0.1:{port}/metrics")
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("retry_worker_inflight_messages{")
        )
    )
