"""The error vocabulary: every failure is classified once, at the adapter edge."""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    THROTTLED = "throttled"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"
    UNKNOWN = "unknown"


class DeliveryError(Exception):
    """A target did not accept a message.

    `code` is the AWS error code (or a code of ours such as `FunctionError.Unhandled`);
    `detail` is what the target said (SPEC.md, Error detail: Lambda's `errorMessage`, Step
    Functions' `cause`, a batch entry's or an AWS exception's message); `error_type` is the
    target's own name for the failure when it has one (Lambda's `errorType`, Step Functions'
    `error`), else the code; `retry_after` is the target's own hint in seconds, when it gave
    one; `park_reason` names why a permanent failure is permanent, when we know better than
    `permanent_error`.
    """

    def __init__(
        self,
        kind: ErrorKind,
        code: str,
        detail: str = "",
        *,
        retry_after: float | None = None,
        park_reason: str | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.kind = kind
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        self.park_reason = park_reason  # a precise parking reason, e.g. `unparseable`
        self.error_type = error_type or code
