"""`accounts:` — the AWS accounts (and their regions) one deployment serves besides its own."""

from __future__ import annotations

import re
from typing import Annotated, NamedTuple
from urllib.parse import urlparse

from pydantic import Field, model_validator

from worker.settings.sections import Model

_ROLE = re.compile(r"arn:aws[a-z-]*:iam::(\d{12}):role/[\w+=,.@/-]+")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")


class AccountSettings(Model):
    """A member account: its role, assumed with `sts:AssumeRole` (refreshed before expiry),
    and the regions its queues live in (none listed: the deployment's `aws.region`)."""

    id: Annotated[str, Field(pattern=r"^\d{12}$")]
    role_arn: str
    external_id: str | None = None
    regions: tuple[str, ...] = ()
    # The deployment's own credentials are a role's (IRSA, pod identity, an ECS task role):
    # assuming another role from them is role chaining, which AWS caps at one hour.
    session_seconds: Annotated[int, Field(ge=900, le=3600)] = 3600

    @model_validator(mode="after")
    def _role_in_the_account(self) -> AccountSettings:
        match = _ROLE.fullmatch(self.role_arn)
        if match is None:
            raise ValueError(f"`role_arn` {self.role_arn!r} is not an IAM role ARN")
        if match.group(1) != self.id:
            raise ValueError(f"`role_arn` is a role of account {match.group(1)}, not of {self.id}")
        for region in self.regions:
            if not _REGION.fullmatch(region):
                raise ValueError(f"`regions`: {region!r} is not an AWS region")
        if len(set(self.regions)) < len(self.regions):
            raise ValueError("`regions`: a region is listed twice")
        return self


def member_regions(account: AccountSettings, home_region: str) -> tuple[str, ...]:
    return account.regions or (home_region,)


class Arn(NamedTuple):
    partition: str
    service: str
    region: str  # empty for a global resource (IAM)
    account: str
    resource: str  # the rest, colons and all (`function:name`, `stateMachine:name`)


def parse_arn(text: str) -> Arn | None:
    """`arn:partition:service:region:account:resource` in its parts; None for what is not
    an ARN (a name, a URL)."""
    parts = text.split(":", 5)
    return Arn(*parts[1:]) if len(parts) == 6 and parts[0] == "arn" else None


def queue_url_place(url: str) -> tuple[str, str | None]:
    """The account a queue URL names, and its region when the host is SQS's
    (`sqs.<region>.amazonaws.com`; None for a VPC endpoint or an emulator)."""
    parsed = urlparse(url)
    account = parsed.path.strip("/").split("/")[0]
    host = (parsed.hostname or "").split(".")
    return account, host[1] if len(host) > 2 and host[0] == "sqs" else None


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def partition_mismatch(account: AccountSettings, home_region: str) -> str | None:
    """Why the role cannot be assumed in the account's regions (another partition), or None."""
    arn = parse_arn(account.role_arn)
    role = arn.partition if arn else "aws"
    for region in member_regions(account, home_region):
        if partition_of(region) != role:
            return f"`role_arn` is in partition {role}, {region} in {partition_of(region)}"
    return None
