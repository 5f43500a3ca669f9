"""The IAM side of many accounts (SPEC.md, "Many accounts and regions"): which queues a role's
policy covers, and the CloudFormation StackSet template of the member accounts' role.

The deployment's role reads its own queues, keeps the coordination table and the sinks, and
may `sts:AssumeRole` exactly the listed member roles; a member account's role (`iam-policy
--account ID`) covers exactly the queues, parking queues and targets that live there. The
StackSet template (`iam-policy --stackset`) creates that role in every member account: it trusts
the deployment's role by `aws:PrincipalArn` (and an external id, when given), and its policy is
the member accounts' statements with the account and partition left to CloudFormation
(`${AWS::AccountId}`, `${AWS::Partition}`): one template for every account a StackSet reaches.
"""

from __future__ import annotations

import json
import re
from typing import Any

from worker.settings import QueueSettings, Settings, member_regions

DEPLOYMENT_ROOT = "arn:${AWS::Partition}:iam::${DeploymentAccountId}:root"
TEMPLATE_DESCRIPTION = (
    "retry-worker: the role its deployment assumes in a member account (iam-policy --stackset)"
)


def policy_queues(settings: Settings, member: str | None) -> list[tuple[str, QueueSettings, bool]]:
    """(name, queue, discovered) of the queues a role's policy covers: those that live in
    `member` (None: the deployment's own account), and what discovery may find there."""
    picked = [(n, q, False) for n, q in settings.queues.items() if q.account == member]
    discovery = settings.discovery
    if discovery is None:
        return picked
    # Every queue the prefix may ever name; ListQueues has no narrower resource than "*".
    defaults = settings.defaults.model_dump(mode="json")
    pattern = f"{discovery.prefix}*"
    if member is None:
        return [*picked, ("<discovered>", discovery.queue_for(pattern, defaults), True)]
    if member not in discovery.accounts:
        return picked
    account = next(a for a in settings.accounts if a.id == member)
    for region in member_regions(account, settings.aws.region):
        queue = discovery.queue_for(pattern, defaults, account=member, region=region)
        picked.append(("<discovered>", queue, True))
    return picked


def assume_grants(settings: Settings, grants: dict[str, dict[str, set[str]]]) -> None:
    """The deployment's role may assume exactly the member roles."""
    for account in settings.accounts:
        grants["AssumeMemberRoles"]["sts:AssumeRole"].add(account.role_arn)


def _anywhere(resource: str, accounts: set[str]) -> Any:
    """A resource ARN with its partition and (member) account left to CloudFormation."""
    text = re.sub(r"^arn:aws[a-z-]*:", "arn:${AWS::Partition}:", resource)
    for account in accounts:
        text = text.replace(f":{account}:", ":${AWS::AccountId}:")
    return {"Fn::Sub": text} if "${" in text else text


def _merged(settings: Settings, policies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The members' statements by Sid. Only a member's own account becomes
    `${AWS::AccountId}` in its statements: a target of another account stays that account's."""
    statements: dict[str, dict[str, Any]] = {}
    for member, policy in zip(settings.accounts, policies, strict=True):
        for statement in policy["Statement"]:
            sid = statement["Sid"]
            merged = statements.setdefault(sid, {"Action": set(), "Resource": {}})
            merged["Action"].update(statement["Action"])
            for resource in statement["Resource"]:
                anywhere = _anywhere(resource, {member.id})
                merged["Resource"][json.dumps(anywhere, sort_keys=True)] = anywhere
    return [
        {
            "Sid": sid,
            "Effect": "Allow",
            "Action": sorted(s["Action"]),
            "Resource": [s["Resource"][key] for key in sorted(s["Resource"])],
        }
        for sid, s in statements.items()
    ]


def stackset_template(
    settings: Settings,
    policies: list[dict[str, Any]],
    operators: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The member role's template; `policies`: each member account's policy document, in
    the order of `accounts`; `operators`: what the operators do there (`iam-policy --operator
    --account`), granted only when the template is given an `OperatorRoleArn` (pause tags,
    replays to the DLQ: the daemon itself never needs them)."""
    granted: list[Any] = _merged(settings, policies)
    for statement in _merged(settings, operators or []) if operators else []:
        statement["Sid"] = f"Operators{statement['Sid']}"
        granted.append({"Fn::If": ["HasOperatorRole", statement, {"Ref": "AWS::NoValue"}]})
    document = {"Version": "2012-10-17", "Statement": granted}
    principals = {
        "Fn::If": [
            "HasOperatorRole",
            [{"Ref": "DeploymentRoleArn"}, {"Ref": "OperatorRoleArn"}],
            {"Ref": "DeploymentRoleArn"},
        ]
    }
    trust = {"ArnEquals": {"aws:PrincipalArn": principals}}
    with_id = {**trust, "StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": TEMPLATE_DESCRIPTION,
        "Parameters": {
            "DeploymentAccountId": {
                "Type": "String",
                "AllowedPattern": "^\\d{12}$",
                "Description": "the account the retry-worker deployment runs in",
            },
            "DeploymentRoleArn": {
                "Type": "String",
                "Description": "the role the deployment runs as (its pods' or tasks' role)",
            },
            "OperatorRoleArn": {
                "Type": "String",
                "Default": "",
                "Description": "the operators' role (commands, console), trusted too; empty: none",
            },
            "RoleName": {"Type": "String", "Default": "retry-worker"},
            "ExternalId": {"Type": "String", "Default": "", "NoEcho": True},
        },
        "Conditions": {
            "HasExternalId": {"Fn::Not": [{"Fn::Equals": [{"Ref": "ExternalId"}, ""]}]},
            "HasOperatorRole": {"Fn::Not": [{"Fn::Equals": [{"Ref": "OperatorRoleArn"}, ""]}]},
        },
        "Resources": {
            "MemberRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": {"Ref": "RoleName"},
                    "MaxSessionDuration": 3600,
                    "AssumeRolePolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"AWS": {"Fn::Sub": DEPLOYMENT_ROOT}},
                                "Action": "sts:AssumeRole",
                                "Condition": {"Fn::If": ["HasExternalId", with_id, trust]},
                            }
                        ],
                    },
                    "Policies": [{"PolicyName": "retry-worker", "PolicyDocument": document}],
                },
            }
        },
        "Outputs": {"RoleArn": {"Value": {"Fn::GetAtt": ["MemberRole", "Arn"]}}},
    }
