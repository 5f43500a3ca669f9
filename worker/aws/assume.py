"""Credentials of an assumed role (`accounts:`), refreshed before they expire, without a restart.

aiobotocore's refreshable credentials are not a public API: they are used here and nowhere
else, and the aiobotocore version is pinned (pyproject.toml). A session gets them by its one
private attribute (`_credentials`), as botocore's own `Session.set_credentials` would, but
refreshable.

One role per account: each (account, region) builds its clients on a session whose credentials
come from `sts:AssumeRole` through the *regional* STS endpoint of that region, under a session
name CloudTrail shows (`retry-worker-<host>`). What an assume says — up or down — is told to
`on_state` on each change; a failed one is not asked again for `RETRY_SECONDS` (the calls of
that account fail fast meanwhile, and each queue's own back-off applies), so a role that
cannot be assumed never hammers STS.
"""

from __future__ import annotations

import datetime
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import anyio
from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioDeferredRefreshableCredentials
from aiobotocore.session import AioSession, get_session

from worker.aws.errors import error_code

RETRY_SECONDS = 30.0  # a failed assume is not tried again sooner
FETCH_SECONDS = 10.0  # an assume that takes longer has failed (a caller waits that long at most)
SESSION_NAME_MAX = 64


class AssumeFailed(Exception):
    """The role could not be assumed (recently): AWS's code, as a botocore error carries it."""

    def __init__(self, role: str, code: str) -> None:
        super().__init__(f"cannot assume {role}: {code}")
        self.response = {"Error": {"Code": code, "Message": f"cannot assume {role}"}}


class _Gated(logging.Filter):
    """aiobotocore logs a failed refresh with its traceback on every call: the calls a failed
    assume's gate refuses (AssumeFailed) are said once, as `account_unavailable`. Every other
    credential warning — the deployment's own credentials' — is left as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], AssumeFailed))


logging.getLogger("aiobotocore.credentials").addFilter(_Gated())


def session_name(who: str = "retry-worker") -> str:
    """`<who>-<host>`: who acted, in the member account's CloudTrail (the daemon, or an
    operator's command or console: `retry-worker-operator`)."""
    host = "".join(c if c.isalnum() or c in "=,.@-" else "-" for c in socket.gethostname())
    return f"{who}-{host}"[:SESSION_NAME_MAX]


def sts_endpoint(region: str) -> str:
    """The regional STS endpoint (the global one is a single region's dependency)."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://sts.{region}.{suffix}"


class Assumed:
    """The credentials of one role in one region; `session` builds clients with them."""

    def __init__(
        self,
        base: AioSession,
        role_arn: str,
        region: str,
        *,
        external_id: str | None = None,
        duration_seconds: int = 3600,
        refresh_before_seconds: float = 600,
        endpoint_url: str | None = None,
        on_state: Callable[[bool, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        config: AioConfig | None = None,
        who: str = "retry-worker",
    ) -> None:
        self._base = base
        self.role_arn = role_arn
        self.region = region
        self._external = external_id
        self._duration = duration_seconds
        self._endpoint = endpoint_url or sts_endpoint(region)
        self._on_state = on_state
        self._clock = clock
        self._config = config  # the daemon's timeouts and retries, not botocore's defaults
        self._who = who
        self._failed: tuple[float, str] | None = None  # when the last assume failed, and why
        self.up: bool | None = None  # unknown until the first assume
        self.why = ""  # AWS's code, while it cannot be assumed
        credentials = AioDeferredRefreshableCredentials(self._fetch, "assume-role")
        # refreshed this long before expiry (advisory), and surely by half that (mandatory)
        credentials._advisory_refresh_timeout = refresh_before_seconds
        credentials._mandatory_refresh_timeout = refresh_before_seconds / 2
        self._mandatory = refresh_before_seconds / 2
        self._expires: datetime.datetime | None = None  # of the credentials in hand
        self.session = get_session()
        self.session._credentials = credentials

    async def _fetch(self) -> dict[str, Any]:
        if self._failed is not None and self._clock() - self._failed[0] < RETRY_SECONDS:
            raise AssumeFailed(self.role_arn, self._failed[1])
        # Shielded and bounded: a caller cancelled mid-assume (a deadline) still leaves its
        # outcome behind, so the next call honours RETRY_SECONDS instead of asking again.
        with anyio.CancelScope(shield=True):
            try:
                with anyio.fail_after(FETCH_SECONDS):
                    answer = await self._assume()
            except Exception as exc:
                code = error_code(exc)
                self._failed = (self._clock(), code)
                if not self._still_usable():  # an early refresh that failed: not down yet
                    self._tell(False, code)
                raise
        self._failed = None
        self._tell(True, "")
        given = answer["Credentials"]
        self._expires = given["Expiration"]
        return {
            "access_key": given["AccessKeyId"],
            "secret_key": given["SecretAccessKey"],
            "token": given["SessionToken"],
            "expiry_time": given["Expiration"].isoformat(),
        }

    async def _assume(self) -> Any:
        extra = {"ExternalId": self._external} if self._external else {}
        async with self._base.create_client(
            "sts", region_name=self.region, endpoint_url=self._endpoint, config=self._config
        ) as sts:
            return await sts.assume_role(
                RoleArn=self.role_arn,
                RoleSessionName=session_name(self._who),
                DurationSeconds=self._duration,
                **extra,
            )

    def _still_usable(self) -> bool:
        """Whether the credentials in hand are still used after this failed refresh: an early
        (advisory) one leaves them; within the mandatory window every call fails instead."""
        if self._expires is None:
            return False
        left = self._expires - datetime.datetime.now(datetime.UTC)
        return left.total_seconds() > self._mandatory

    def _tell(self, up: bool, why: str) -> None:
        changed = up != self.up
        self.up, self.why = up, why
        if changed and self._on_state is not None:
            self._on_state(up, why)
