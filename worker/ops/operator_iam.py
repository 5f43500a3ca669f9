"""`iam-policy --operator`: what a person running the operator commands (or the console, which
runs them) needs, nothing more.

Read, delete and send on the parking queues (summary, list, export, replay, purge, restore to
them); send, tag and untag on the DLQs (replay to the DLQ, pause, resume), their attributes and
tags (status); the targets' own actions (replay `--to target`), and with coordination the
table's item operations (a replay to the target joins the fleet while it runs).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from worker.ops.iam import Arns, grant_coordination, statements, target_statements
from worker.settings import Settings

PARKING_ACTIONS = (
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:ListQueueTags",  # the keeper's note: when it last kept the queue, the oldest parked
    "sqs:ReceiveMessage",
    "sqs:SendMessage",
)
DLQ_ACTIONS = (
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:ListDeadLetterSourceQueues",
    "sqs:ListQueueTags",
    "sqs:SendMessage",
    "sqs:TagQueue",
    "sqs:UntagQueue",
)


def operator_policy(
    settings: Settings, account: str | None = None, member: str | None = None
) -> dict[str, Any]:
    """The operators' policy in the deployment's account; with `member`, what they do in
    that member account (through its role: `iam-policy --stackset` grants it there)."""
    grants: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    account = member or account
    for queue in settings.queues.values():
        if queue.account != member:  # another account's: through its role
            continue
        arns = Arns(queue.region or settings.aws.region, account)
        dlq = arns.queue(queue.queue_ref)
        for action in DLQ_ACTIONS:
            grants["OperateDeadLetterQueues"][action].add(dlq)
        for action in PARKING_ACTIONS:
            grants["OperateParkingQueues"][action].add(arns.queue(queue.policy.parking_queue or ""))
        for sid, action, resource in target_statements(queue, dlq, arns, None):
            grants[f"Replay{sid}"][action].add(resource)
    if member is not None:
        return {"Version": "2012-10-17", "Statement": statements(grants)}
    arns = Arns(settings.aws.region, account)
    grant_coordination(settings, arns, grants)
    grant_backups(settings, arns.partition, grants)
    # The member accounts' queues: through their roles, which must trust the operator's role
    # too (the StackSet's OperatorRoleArn); CloudTrail names the session retry-worker-operator.
    for listed in settings.accounts:
        grants["AssumeMemberRoles"]["sts:AssumeRole"].add(listed.role_arn)
    if settings.aws.kms_key_arns:
        for action in ("kms:Decrypt", "kms:GenerateDataKey"):
            grants["UseQueueKeys"][action].update(settings.aws.kms_key_arns)
    return {"Version": "2012-10-17", "Statement": statements(grants)}


def grant_backups(
    settings: Settings, partition: str, grants: dict[str, dict[str, set[str]]]
) -> None:
    """Backups and exports in S3 (`operator.backup_dir: s3://bucket/prefix`): write and read
    exactly under that prefix, and list it (a backup is never overwritten; restore reads its
    parts in order)."""
    where = settings.operator.backup_dir
    if not where or not where.startswith("s3://"):
        return
    bucket, _, prefix = where.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    objects = f"arn:{partition}:s3:::{bucket}/{prefix + '/' if prefix else ''}*"
    for action in ("s3:GetObject", "s3:PutObject"):
        grants["KeepBackupsInS3"][action].add(objects)
    grants["ListBackupsInS3"]["s3:ListBucket"].add(f"arn:{partition}:s3:::{bucket}")
