"""Where digests go: an SNS topic, an EventBridge bus, a webhook (Slack or plain JSON).

Each sink sends one digest or raises `SinkFailed` saying whether trying again may help. The
webhook's URL is a secret: read from its file at each send (a rotated secret is picked up),
never logged, never in an error text.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import anyio

from worker.aws.clients import Client
from worker.aws.errors import error_code, kind_of
from worker.core.errors import ErrorKind
from worker.settings.notify import EventBridgeSink, SnsSink, WebhookSink

SOURCE = "retry-worker"
DETAIL_TYPE = "retry-worker.digest"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
SUBJECT_MAX = 100  # SNS: a subject is at most 100 characters, one line
ANSWER_BYTES = 4096  # read of a webhook's answer: an endless or huge one holds nothing


class SinkFailed(Exception):
    """`retryable`: this digest may go through if tried again; `sink_down`: the sink itself
    refuses (its URL is gone, the permission denied), whatever the digest."""

    def __init__(
        self,
        what: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        sink_down: bool = False,
    ) -> None:
        super().__init__(what)
        self.retryable = retryable
        self.retry_after = retry_after
        self.sink_down = sink_down


class DigestSink(Protocol):
    kind: str  # sns | eventbridge | webhook: the metric's `sink` label

    async def send(self, digest: dict[str, Any]) -> None: ...


def headline(digest: dict[str, Any]) -> str:
    """One line: what happened where, how often."""
    count, queue = digest["count"], digest["queue"]
    noun = "message" if count == 1 else "messages"
    if digest["event"] == "arrived":
        return f"{count} new {noun} in the DLQ of {queue} after a quiet spell"
    cause = digest.get("error_type") or digest.get("error") or "?"
    return f"{count} {noun} parked from {queue}: {digest['reason']} ({cause})"


def _slack(text: object) -> str:
    """Text as Slack shows it literally: `&`, `<` and `>` escaped, as Slack asks, so what a
    target said can never become a link or a mention in the channel."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: object) -> str:
    """Inside a code span: never formatted, never auto-linked (a backtick or a line break
    would end it: they become ' and a space)."""
    return "`" + " ".join(_slack(text).replace("`", "'").split()) + "`"


def slack_text(digest: dict[str, Any]) -> str:
    """The digest as a Slack message: what the daemon knows in plain text, everything a
    target said (type, message) in code spans."""
    count, queue = digest["count"], digest["queue"]
    noun = "message" if count == 1 else "messages"
    if digest["event"] == "arrived":
        lines = [
            f"*retry-worker*: {count} new {noun} in the DLQ of {_code(queue)} after a quiet spell"
        ]
    else:
        lines = [
            f"*retry-worker*: {count} {noun} parked from {_code(queue)}: {_code(digest['reason'])}",
            f"error {_code(digest['error'])}, type {_code(digest.get('error_type') or 'none')}",
        ]
        if digest.get("error_message"):
            lines.append(f"said {_code(digest['error_message'])}")
    lines.append(f"{digest['window_start']} to {digest['window_end']}")
    if digest["sample_message_ids"]:
        lines.append("e.g. " + ", ".join(_code(i) for i in digest["sample_message_ids"]))
    if digest.get("console"):
        lines.append(f"<{_slack(digest['console'])}|open in the console>")
    return "\n".join(lines)


def slack_body(digest: dict[str, Any]) -> dict[str, Any]:
    # Slack fetches the links in a message to preview them: not what a failure said.
    return {"text": slack_text(digest), "unfurl_links": False, "unfurl_media": False}


# The sink, not the digest: a topic, a bus or a permission that is not there.
SINK_DOWN_CODES = frozenset(
    {
        "AuthorizationError",
        "AccessDenied",
        "AccessDeniedException",
        "NotFound",
        "NotFoundException",
        "ResourceNotFoundException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "KMSDisabledException",
        "KMSNotFoundException",
        "KMSAccessDeniedException",
    }
)
# HTTP statuses that say the webhook itself is gone or refuses us
SINK_DOWN_STATUSES = frozenset({401, 403, 404, 410})


def _aws_failure(exc: Exception) -> SinkFailed:
    code = error_code(exc)
    kind = kind_of(code)
    retryable = kind is not ErrorKind.PERMANENT
    return SinkFailed(code, retryable=retryable, sink_down=code in SINK_DOWN_CODES)


def sns_subject(digest: dict[str, Any]) -> str:
    """SNS takes a subject of printable ASCII on one line, under 100 characters: anything
    else would refuse the whole digest."""
    line = " ".join(("retry-worker: " + headline(digest)).split())
    printable = "".join(c if " " <= c <= "~" else "?" for c in line)
    return printable[: SUBJECT_MAX - 1]


class SnsDigests:
    kind = "sns"

    def __init__(self, client: Client, settings: SnsSink) -> None:
        self._client = client
        self._topic = settings.topic_arn

    async def send(self, digest: dict[str, Any]) -> None:
        text = json.dumps(digest, ensure_ascii=False)
        subject = sns_subject(digest)
        extra: dict[str, str] = {}
        if self._topic.endswith(".fifo"):
            extra = {
                "MessageGroupId": SOURCE,
                "MessageDeduplicationId": hashlib.sha256(text.encode()).hexdigest(),
            }
        try:
            await self._client.publish(TopicArn=self._topic, Message=text, Subject=subject, **extra)
        except Exception as exc:
            raise _aws_failure(exc) from exc


class EventBridgeDigests:
    kind = "eventbridge"

    def __init__(self, client: Client, settings: EventBridgeSink) -> None:
        self._client = client
        self._bus = settings.bus

    async def send(self, digest: dict[str, Any]) -> None:
        entry = {
            "Source": SOURCE,
            "DetailType": DETAIL_TYPE,
            "Detail": json.dumps(digest, ensure_ascii=False),
            "EventBusName": self._bus,
        }
        try:
            answer = await self._client.put_events(Entries=[entry])
        except Exception as exc:
            raise _aws_failure(exc) from exc
        if answer.get("FailedEntryCount"):
            [failed] = answer["Entries"]
            code = str(failed.get("ErrorCode", "Unknown"))
            retryable = code in ("ThrottlingException", "InternalFailure")
            raise SinkFailed(code, retryable=retryable, sink_down=code in SINK_DOWN_CODES)


class WebhookDigests:
    kind = "webhook"

    def __init__(self, session: aiohttp.ClientSession, settings: WebhookSink) -> None:
        self._session = session
        self._file = settings.url_file
        self._format = settings.format

    async def _url(self) -> str:
        return await webhook_url(self._file)

    async def send(self, digest: dict[str, Any]) -> None:
        body = slack_body(digest) if self._format == "slack" else digest
        url = await self._url()
        try:
            post = self._session.post(url, json=body, allow_redirects=False, proxy=proxy_for(url))
            async with post as answer:
                # the status is the answer; its body, whatever its size, is not kept
                await answer.content.read(ANSWER_BYTES)
                status = answer.status
                after = answer.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            # never the URL (a secret): the kind of failure only
            raise SinkFailed(type(exc).__name__, retryable=True) from None
        if 200 <= status < 300:
            return
        retryable = status in (408, 425, 429) or status >= 500
        raise SinkFailed(
            f"HTTP {status}",
            retryable=retryable,
            retry_after=_seconds(after),
            sink_down=status in SINK_DOWN_STATUSES,
        )


async def webhook_url(url_file: str) -> str:
    """The webhook's URL, read from its file; SinkFailed (never quoting it) when the file
    cannot be read or does not hold an https URL."""
    try:
        url = (await anyio.Path(url_file).read_text(encoding="utf-8")).strip()
    except OSError as exc:
        # retryable: a Secret's file may appear or be rotated in place
        raise SinkFailed(f"url_file {url_file}: {exc.strerror}", retryable=True) from exc
    except UnicodeDecodeError:
        raise SinkFailed(f"url_file {url_file}: not UTF-8 text", retryable=True) from None
    parts = urlsplit(url)
    # Plain http only to this host: anywhere else (or through a proxy) the URL's path, the
    # credential, would cross the network in the clear.
    if not (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK)):
        raise SinkFailed(f"url_file {url_file}: not an https:// URL", retryable=True)
    return url


def proxy_for(url: str) -> str | None:
    """HTTPS_PROXY for an https URL (its tunnel hides the path), unless NO_PROXY spares the
    host; never a proxy for plain http (to this host only)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or proxy_bypass(parts.hostname or ""):
        return None
    return getproxies().get("https")


def _seconds(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
