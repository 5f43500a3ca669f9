"""The error vocabulary: every failure is classified once, at the adapter edge."""

from __future__ import annotations

import re
from enum import StrEnum

# What a target says is kept in at most this many characters (parking keeps 1 KiB of it): a
# bound on what a failure holds in memory and logs.
MAX_DETAIL_CHARS = 4096
MAX_TYPE_CHARS = 256  # a type names a kind of failure (a Lambda errorType is a class name)
# Characters SQS refuses in a message or a String attribute (its allowed set is #x9 #xA #xD
# #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF): other controls, lone surrogates, U+FFFE/F.
_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SPACES = re.compile(r"\s+")


def sqs_refuses(text: str) -> str | None:
    """The first character SQS would refuse in a body (a control, half a surrogate pair,
    U+FFFE/F), or None."""
    found = _REFUSED.search(text)
    return found.group() if found else None


def clean(text: str) -> str:
    """`text` with what SQS would refuse replaced by U+FFFD."""
    return _REFUSED.sub("\ufffd", text)


def said(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """What a target said, as the daemon keeps it: what SQS would refuse replaced by U+FFFD
    (an ANSI escape, NUL, half of a surrogate pair — one such character would fail the whole
    parking call), cut to `limit` characters."""
    return clean(text[:limit])


def said_type(text: str | None) -> str | None:
    """A failure's type as kept: one line, MAX_TYPE_CHARS at most, None when empty."""
    if not text:
        return None
    return _SPACES.sub(" ", said(text, MAX_TYPE_CHARS)).strip() or None


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
        detail = said(detail)
        super().__init__(f"{code}: {detail}" if detail else code)
        self.kind = kind
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        self.park_reason = park_reason  # a precise parking reason, e.g. `unparseable`
        self.error_type = said_type(error_type) or code
