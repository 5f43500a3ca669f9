"""The embedded local AWS emulator (moto's server) for the demo, the tests and the benchmark:
the server, helpers that create queues, functions and tables, a fault-injecting and
call-counting proxy (`proxy.py`) and the demo (`demo.py`, which runs the daemon).

Needs the `demo` extra (`pip install 'retry-worker[demo]'`). The daemon never imports it.
"""

from __future__ import annotations

import io
import json
import logging
import urllib.request
import zipfile
from typing import Any

ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/retry-worker-demo"
# Lambda without Docker (an invoke echoes its input); Step Functions executions really run
# (moto's interpreter), so they succeed, fail and can be redriven (see `redrive.py`).
CONFIG = {"lambda": {"use_docker": False}, "stepfunctions": {"execute_state_machine": True}}


class MotoServer:
    """moto's server on a free loopback port, Lambda without Docker (invokes echo input)."""

    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise SystemExit(
                "the local emulator needs the demo extra: pip install 'retry-worker[demo]'"
            ) from exc
        from worker.emulator import clock, speedups

        speedups.apply()
        clock.install()
        # The emulator's per-request access log is noise next to the worker's own logs.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.url = ""

    def start(self) -> MotoServer:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        from worker.emulator import redrive

        redrive.serve_integrations(port)
        self.post("/moto-api/config", CONFIG)
        return self

    def reset(self) -> None:
        from worker.emulator import clock

        clock.reset()
        self.post("/moto-api/reset", {})
        self.post("/moto-api/config", CONFIG)

    def post(self, path: str, payload: dict[str, Any]) -> None:
        url = self.url + path
        request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback only
            pass

    def stop(self) -> None:
        self._server.stop()


def function_zip() -> bytes:
    """A tiny handler; without Docker moto does not run it (invokes echo their input)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


async def create_role(iam: Any) -> None:
    """The execution role moto insists on (it checks that the role exists)."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    try:
        await iam.create_role(
            RoleName=ROLE_ARN.rsplit("/", 1)[-1], AssumeRolePolicyDocument=json.dumps(trust)
        )
    except Exception as exc:  # already there
        if "EntityAlreadyExists" not in str(exc):
            raise


async def create_function(client: Any, name: str) -> str:
    response = await client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=ROLE_ARN,
        Handler="handler.handler",
        Code={"ZipFile": function_zip()},
        Timeout=30,
    )
    return str(response["FunctionArn"])


async def create_queue(client: Any, name: str, **attributes: str) -> str:
    response = await client.create_queue(QueueName=name, Attributes=attributes)
    return str(response["QueueUrl"])


async def queue_arn(client: Any, url: str) -> str:
    attrs = await client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attrs["Attributes"]["QueueArn"])


async def create_source_with_dlq(
    client: Any, source: str, dlq: str, max_receive_count: int
) -> tuple[str, str]:
    dlq_url = await create_queue(client, dlq)
    policy = {
        "deadLetterTargetArn": await queue_arn(client, dlq_url),
        "maxReceiveCount": max_receive_count,
    }
    source_url = await create_queue(client, source, RedrivePolicy=json.dumps(policy))
    return source_url, dlq_url


async def create_coordination_table(client: Any, name: str) -> None:
    """The coordination table as deploy/dynamodb creates it (pk/sk strings, TTL)."""
    await client.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    await client.update_time_to_live(
        TableName=name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
    )
