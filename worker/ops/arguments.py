"""The operator commands' arguments (SPEC.md, Operator commands), added to the main parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from worker.ops.scan import PARALLEL

DEFAULT_RATE = 10.0
MAX_PARALLEL = 50


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be more than 0 messages a second")
    return value


def _parallel(text: str) -> int:
    value = _positive(text)
    if value > MAX_PARALLEL:
        raise argparse.ArgumentTypeError(f"at most {MAX_PARALLEL}")
    return value


def _parallel_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parallel",
        type=_parallel,
        default=PARALLEL,
        metavar="N",
        help=f"receives (and chunks moved) in flight at most (default {PARALLEL}); "
        "a small queue is read by fewer, and --rate still bounds a move",
    )


def _filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (all must hold; none given: all messages)")
    group.add_argument("--reason", action="append", default=[], help="parking reason (repeat)")
    group.add_argument("--error", action="append", default=[], metavar="CODE", help="(repeat)")
    group.add_argument(
        "--error-type",
        action="append",
        default=[],
        metavar="TYPE",
        help="what the target called the failure, e.g. a Lambda errorType (repeat; none: "
        "parked without one)",
    )
    group.add_argument("--id", action="append", default=[], metavar="MESSAGE_ID", help="(repeat)")
    group.add_argument("--parked-before", metavar="ISO", help="e.g. 2026-12-01T00:00:00Z")
    group.add_argument("--parked-after", metavar="ISO")
    group.add_argument("--body-contains", metavar="TEXT")
    group.add_argument(
        "--match",
        action="append",
        default=[],
        metavar="JSONPATH=VALUE",
        help="on a JSON body, e.g. $.order.id=42 (repeat)",
    )
    group.add_argument("--limit", type=int, metavar="N", help="at most N messages")


def _acting(parser: argparse.ArgumentParser, *, backup: bool = True) -> None:
    parser.add_argument("--yes", action="store_true", help="act (without it: a dry run)")
    parser.add_argument(
        "--rate", type=_rate, default=DEFAULT_RATE, help="messages per second (default 10)"
    )
    if backup:
        parser.add_argument(
            "--backup",
            metavar="FILE",
            help="JSONL backup (default ./retry-worker-backup-<queue>-<UTC time>.jsonl)",
        )


def add_operator_commands(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    config_args: Callable[[argparse.ArgumentParser], None],
) -> None:
    status = sub.add_parser("status", help="every configured queue: DLQ, parking queue, paused")
    config_args(status)
    status.add_argument("--json", action="store_true")

    parked = sub.add_parser("parked", help="see, replay, purge or export parked messages")
    actions = parked.add_subparsers(dest="action", required=True)
    for name, text in (
        ("summary", "counts by reason, error, error type and age"),
        ("list", "one line per parked message"),
        ("replay", "send parked messages back to the DLQ (fresh attempts) or to the target"),
        ("purge", "delete parked messages (after writing their backup)"),
        ("export", "write parked messages to a JSONL file; changes nothing"),
    ):
        action = actions.add_parser(name, help=text)
        config_args(action)
        action.add_argument("queue", metavar="QUEUE", help="logical name (or the DLQ's URL)")
        _filters(action)
        _parallel_option(action)
        if name in ("summary", "list"):
            action.add_argument("--json", action="store_true")
        if name == "list":
            action.add_argument("--show-body", action="store_true", help="first 120 characters")
        if name == "replay":
            action.add_argument("--to", choices=("dlq", "target"), default="dlq")
            action.add_argument(
                "--transform",
                metavar="EXPR",
                help="JMESPath over the message view: its result is the payload replayed",
            )
        if name in ("replay", "purge"):
            _acting(action)
        if name == "export":
            action.add_argument("--out", required=True, metavar="FILE")

    restore = sub.add_parser("restore", help="send the messages of a backup or export file")
    config_args(restore)
    restore.add_argument("file", metavar="FILE")
    restore.add_argument("--to", required=True, metavar="QUEUE_OR_URL", help="queue name or URL")
    _acting(restore, backup=False)
    _parallel_option(restore)

    explain = sub.add_parser(
        "explain", help="what a queue's rules, transform and hook decide for one message"
    )
    config_args(explain)
    explain.add_argument("queue", metavar="QUEUE", help="logical name (or the DLQ's URL)")
    source = explain.add_mutually_exclusive_group(required=True)
    source.add_argument("--body-file", metavar="FILE", help="the message body")
    source.add_argument("--parked-id", metavar="ID", help="a parked message of the queue")
    explain.add_argument(
        "--attribute", action="append", default=[], metavar="NAME=VALUE", help="(repeat)"
    )
    explain.add_argument("--attempt", type=_positive, default=1, metavar="N")
    explain.add_argument("--json", action="store_true")

    for name, text in (
        ("pause", "stop every replica receiving from a queue (tags the DLQ)"),
        ("resume", "undo pause"),
    ):
        command = sub.add_parser(name, help=text)
        config_args(command)
        command.add_argument("queue", metavar="QUEUE")
        if name == "pause":
            command.add_argument("--reason", metavar="TEXT")
