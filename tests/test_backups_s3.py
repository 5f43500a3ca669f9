"""Backups and exports in S3 (worker/ops/store.py): `--backup`, `--out` and `restore` take
`s3://bucket/key`; a chunk is in its backup before it moves, restore reads it back, and a
bucket that is missing (or a backup that exists) refuses the command before anything moves.
Real S3 calls on the emulator, through the proxy (it tells the order of the calls)."""

from __future__ import annotations

import json

import anyio
import pytest
import yaml

from tests.helpers import depth, wait_for
from tests.test_operator_loop import Cli
from tests.test_operator_safety import _park, _visible
from worker.emulator import create_queue
from worker.emulator.proxy import Rule

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

BUCKET = "rw-backups"


async def _setup(aws, proxy, tmp_path, count: int = 25):
    dlq = await create_queue(aws.sqs, "orders-dlq")
    parked = await create_queue(aws.sqs, "parked")
    await _park(aws, parked, dlq, count)
    s3 = await aws.client("s3")
    await s3.create_bucket(Bucket=BUCKET)
    tree = {
        "aws": {"endpoint_url": proxy.url},
        "keeper": {"enabled": False},
        "defaults": {"policy": {"parking_queue": "parked"}},
        "queues": {"orders": {"name": "orders-dlq", "target": {"kind": "sqs", "queue": "out"}}},
    }
    return Cli(tmp_path, tree), s3, dlq, parked


async def _lines(s3, prefix: str) -> list[dict]:
    listed = await s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    out = []
    for item in sorted(listed.get("Contents", []), key=lambda i: i["Key"]):
        response = await s3.get_object(Bucket=BUCKET, Key=item["Key"])
        async with response["Body"] as stream:
            text = (await stream.read()).decode()
        out += [json.loads(line) for line in text.splitlines()]
    return out


async def test_a_purge_backs_up_to_s3_first_and_restore_reads_it_back(aws, proxy, tmp_path):
    cli, s3, _, parked = await _setup(aws, proxy, tmp_path)
    proxy.clear()
    where = f"s3://{BUCKET}/incident-7/purge.jsonl"
    result = await cli("parked", "purge", "orders", "--yes", "--backup", where)
    assert result.returncode == 0, result.stderr
    assert f"backup: {where}" in result.stdout
    assert await depth(aws.sqs, parked) == 0
    lines = await _lines(s3, "incident-7/purge.jsonl.part-")
    assert sorted(json.loads(line["body"])["n"] for line in lines) == list(range(25))
    # every chunk was in S3 before its messages were deleted from the parking queue
    calls = [(s, o) for _, s, o, _, _ in proxy.arrivals if (s, o) != ("sqs", "ReceiveMessage")]
    deletes = [i for i, c in enumerate(calls) if c == ("sqs", "DeleteMessageBatch")]
    puts = [i for i, c in enumerate(calls) if c == ("s3", f"PUT {BUCKET}")]
    assert len(puts) == len(deletes) >= 3
    assert all(p < d for p, d in zip(puts, deletes, strict=True))

    restored = await cli("restore", where, "--to", "parked", "--yes")
    assert restored.returncode == 0, restored.stderr
    assert "restored 25 messages" in restored.stdout
    assert await depth(aws.sqs, parked) == 25


async def test_an_export_goes_to_s3_and_nothing_leaves_the_parking_queue(aws, proxy, tmp_path):
    cli, s3, _, parked = await _setup(aws, proxy, tmp_path)
    where = f"s3://{BUCKET}/exports/all.jsonl"
    result = await cli("parked", "export", "orders", "--out", where)
    assert result.returncode == 0, result.stderr
    assert len(await _lines(s3, "exports/all.jsonl.part-")) == 25
    assert await depth(aws.sqs, parked) == 25
    again = await cli("parked", "export", "orders", "--out", where)
    assert again.returncode == 2
    assert f"{where}: exists; an export is never overwritten" in again.stderr


async def test_a_missing_bucket_refuses_before_anything_moves(aws, proxy, tmp_path):
    cli, _, dlq, parked = await _setup(aws, proxy, tmp_path)
    where = "s3://no-such-bucket/replay.jsonl"
    result = await cli("parked", "replay", "orders", "--yes", "--backup", where)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"{where}: NoSuchBucket" in result.stderr
    assert await depth(aws.sqs, dlq) == 0  # nothing replayed
    assert await depth(aws.sqs, parked) == 25  # all still parked, and visible again
    missing = await cli("restore", where, "--to", "parked")
    assert missing.returncode == 2
    assert f"{where}: NoSuchBucket" in missing.stderr


async def test_two_commands_writing_one_backup_key_never_overwrite_a_part(aws, proxy, tmp_path):
    """Both past the existence check (their reads held up), both writing one key: the second
    part-000001 is refused (IfNoneMatch), so every purged message is in the backup."""

    cli, s3, _, parked = await _setup(aws, proxy, tmp_path, count=10)
    billing_dlq = await create_queue(aws.sqs, "billing-dlq")
    billing = await create_queue(aws.sqs, "parked-billing")
    await _park(aws, billing, billing_dlq, 10)
    tree = yaml.safe_load(cli.config.read_text())
    tree["queues"]["billing"] = {
        "name": "billing-dlq",
        "target": {"kind": "sqs", "queue": "out"},
        "policy": {"parking_queue": "parked-billing"},
    }
    cli.config.write_text(yaml.safe_dump(tree))
    proxy.add(Rule("sqs", "ReceiveMessage", "delay", seconds=1.5))  # both pass exists() first
    where = f"s3://{BUCKET}/incident-7/purge.jsonl"
    results = {}

    async def purge(queue: str) -> None:
        results[queue] = await cli("parked", "purge", queue, "--yes", "--backup", where)

    async with anyio.create_task_group() as tg:
        tg.start_soon(purge, "orders")
        tg.start_soon(purge, "billing")
    purged = 20 - await depth(aws.sqs, parked) - await depth(aws.sqs, billing)
    assert len(await _lines(s3, "incident-7/purge.jsonl.part-")) == purged
    assert sorted(r.returncode for r in results.values()) == [0, 2]  # one refused, by name


async def test_backups_of_one_name_in_two_places_restore_apart(aws, proxy, tmp_path):
    """A restore's journal is named after the whole location: two exports called orders.jsonl
    (two days) each restore all their messages."""
    cli, _, _, _ = await _setup(aws, proxy, tmp_path, count=5)
    analysis = await create_queue(aws.sqs, "analysis")
    for day in ("2026-12-01", "2026-12-02"):
        where = f"s3://{BUCKET}/{day}/orders.jsonl"
        assert (await cli("parked", "export", "orders", "--out", where)).returncode == 0
        restored = await cli("restore", where, "--to", "analysis", "--yes")
        assert "restored 5 messages" in restored.stdout, restored.stdout
    assert await depth(aws.sqs, analysis) == 10


@pytest.mark.parametrize("folder", [f"s3://{BUCKET}", f"s3://{BUCKET}/ops/"])
async def test_every_backup_dir_the_configuration_accepts_works(aws, proxy, tmp_path, folder):
    cli, s3, _, parked = await _setup(aws, proxy, tmp_path, count=5)
    tree = yaml.safe_load(cli.config.read_text())
    tree["operator"] = {"backup_dir": folder}
    cli.config.write_text(yaml.safe_dump(tree))
    result = await cli("parked", "purge", "orders", "--yes")
    assert result.returncode == 0, result.stderr
    prefix = (
        "ops/retry-worker-backup-orders-" if folder.endswith("ops/") else "retry-worker-backup-"
    )
    assert len(await _lines(s3, prefix)) == 5
    assert await depth(aws.sqs, parked) == 0


async def test_the_consoles_export_to_s3_downloads_and_its_backups_go_there(aws, proxy, tmp_path):
    """`console --backup-dir s3://…` (the chart's console.backups.s3): an export is written
    to S3 and streamed back by the download link; a purge's backup is written there first."""
    from tests.conftest import make_settings
    from tests.console_client import browser, running_console
    from worker.ops.store import S3Location

    _, s3, _, parked = await _setup(aws, proxy, tmp_path, count=12)
    queues = {"orders": {"name": "orders-dlq", "target": {"kind": "sqs", "queue": "out"}}}
    settings = make_settings(proxy.url, queues)
    where = S3Location(BUCKET, "console")
    async with running_console(settings, backup_dir=where) as (url, audit), browser(url) as b:
        job = await b.plan("orders", action="export")
        done = await b.finished((await b.confirm(job)).url.rsplit("/", 1)[1])
        assert f"s3://{BUCKET}/console/retry-worker-export-orders-" in done.element("backup")
        async with b.session.get(f"{url}jobs/{done.url.rsplit('/', 1)[1]}/download") as r:
            assert r.status == 200
            lines = (await r.text()).splitlines()
        assert sorted(json.loads(json.loads(x)["body"])["n"] for x in lines) == list(range(12))
        job = await b.plan("orders", action="purge")
        purged = await b.finished((await b.confirm(job)).url.rsplit("/", 1)[1])
        assert f"s3://{BUCKET}/console/retry-worker-backup-orders-" in purged.element("backup")
    assert await depth(aws.sqs, parked) == 0
    assert len(await _lines(s3, "console/retry-worker-backup-orders-")) == 12
    assert f"s3://{BUCKET}/console/" in audit.getvalue()  # the audit line names it


async def test_chunks_backed_up_at_once_each_get_their_own_part(aws, proxy, tmp_path):
    """Ten chunks in flight, one S3 backup: each chunk's part has its own number (two took
    the same one, S3 refused the second by IfNoneMatch, and the purge stopped)."""
    cli, s3, _, parked = await _setup(aws, proxy, tmp_path, count=100)
    where = f"s3://{BUCKET}/incident/purge.jsonl"
    result = await cli("parked", "purge", "orders", "--yes", "--rate", "1000", "--backup", where)
    assert result.returncode == 0, result.stderr
    assert "done: 100, failed: 0" in result.stdout
    lines = await _lines(s3, "incident/purge.jsonl.part-")
    assert len({line["message_id"] for line in lines}) == len(lines) == 100
    assert await depth(aws.sqs, parked) == 0


async def test_a_move_stopped_by_its_backup_says_what_it_moved(aws, proxy, tmp_path):
    """S3 stops taking the backup's parts halfway through a purge: the command says how many
    it moved before (each of them in the backup) and exits 1; the rest stay parked."""
    cli, s3, _, parked = await _setup(aws, proxy, tmp_path, count=100)
    proxy.add(Rule("s3", f"PUT {BUCKET}", "delay", seconds=0.2))  # PutObject, path style
    where = f"s3://{BUCKET}/incident/purge.jsonl"
    running = cli.start(
        *("parked", "purge", "orders", "--yes", "--rate", "1000", "--parallel", "2"),
        *("--backup", where),
    )
    try:
        await wait_for(lambda: _parts(s3, 3), timeout=60)
        proxy.add(Rule("s3", f"PUT {BUCKET}", "error", code="InternalError"), first=True)
        out, err = await cli.ended(running)
    finally:
        running.kill()
    assert running.returncode == 1, out + err
    assert "stopped by an error" in out
    assert "purge: stopped: BackupError" in err or "InternalError" in err, err
    left = await depth(aws.sqs, parked)
    assert f"done: {100 - left}, failed: 0" in out
    assert 30 <= 100 - left < 100
    assert len(await _lines(s3, "incident/purge.jsonl.part-")) >= 100 - left


async def _parts(s3, at_least: int) -> bool:
    listed = await s3.list_objects_v2(Bucket=BUCKET, Prefix="incident/purge.jsonl.part-")
    return len(listed.get("Contents", [])) >= at_least


async def test_ctrl_c_while_a_chunk_is_backed_up_moves_nothing_more(aws, proxy, tmp_path):
    """Ctrl-C while the first chunk's part is being written: the part is stored (a backup of
    more than was moved is harmless), the chunk is not moved, the command stops."""
    cli, _, _, parked = await _setup(aws, proxy, tmp_path, count=30)
    proxy.add(Rule("s3", f"PUT {BUCKET}", "delay", seconds=2))
    where = f"s3://{BUCKET}/incident/purge.jsonl"
    code, out, err = await cli.interrupted(
        lambda: proxy.held > 0,  # the part is being written
        *("parked", "purge", "orders", "--yes", "--rate", "1000", "--parallel", "1"),
        *("--backup", where),
    )
    assert code == 0, out + err
    assert "done: 0, failed: 0" in out
    await wait_for(lambda: _visible(aws, parked, 30), timeout=10)
