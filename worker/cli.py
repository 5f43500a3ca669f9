"""The command line (SPEC.md, Command line): the daemon's commands here, the operator
commands' arguments in `worker/ops/arguments.py` and their work in `worker/ops/`."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

import anyio
import structlog
import yaml
from prometheus_client import disable_created_metrics

from worker.config import ConfigError, load_settings
from worker.logs import configure_logging
from worker.ops.arguments import add_operator_commands
from worker.settings import Settings

EXIT_OK, EXIT_CRASH, EXIT_CONFIG = 0, 1, 2


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", help="environment: also loads config/<ENV>.yaml")
    parser.add_argument(
        "--config", action="append", default=[], metavar="FILE", help="extra YAML file(s)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retry-worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _config_args(sub.add_parser("run", help="run the daemon"))
    check = sub.add_parser("check-config", help="validate and print the configuration")
    _config_args(check)
    check.add_argument(
        "--aws",
        action="store_true",
        help="also ask AWS, with the daemon's own calls: every DLQ, parking queue, target and "
        "notification sink exists and the permissions hold",
    )
    demo = sub.add_parser("demo", help="run the daemon against an embedded local AWS emulator")
    demo.add_argument("--duration", type=float, default=60.0, help="seconds to run")
    demo.add_argument(
        "--console-listen", default="127.0.0.1:8090", metavar="HOST:PORT", help="loopback"
    )
    demo.add_argument(
        "--verbose", action="store_true", help="a log line per message, not only progress"
    )
    iam = sub.add_parser("iam-policy", help="print the least-privilege IAM policy (JSON)")
    _config_args(iam)
    iam.add_argument("--account-id", help="for queues and functions given by name")
    iam.add_argument(
        "--account", help="the role of this member account (accounts:): what lives there"
    )
    iam.add_argument(
        "--stackset",
        action="store_true",
        help="the member accounts' role as a CloudFormation StackSet template",
    )
    iam.add_argument(
        "--resolve-sources",
        action="store_true",
        help="ask AWS for each DLQ's redrive sources and grant exactly those",
    )
    iam.add_argument(
        "--operator", action="store_true", help="the policy for a person running the commands"
    )
    # The container health check (ECS, Docker HEALTHCHECK) asks liveness: one DLQ that cannot
    # be read makes the daemon unready, and a fleet replaced for it would stop every queue.
    health = sub.add_parser("healthcheck", help="exit 0 if the local /livez answers 200")
    health.add_argument("--url", default="http://127.0.0.1:8080/livez")
    add_operator_commands(sub, _config_args)
    console = sub.add_parser("console", help="the operator commands as web pages")
    _config_args(console)
    console.add_argument("--listen", default="127.0.0.1:8090", metavar="HOST:PORT")
    console.add_argument("--read-only", action="store_true", help="pages only, no action")
    console.add_argument(
        "--auth-token-file",
        metavar="FILE",
        help="NAME:TOKEN lines; required to listen beyond loopback",
    )
    console.add_argument(
        "--backup-dir",
        metavar="DIR",
        help="where backups and exports are written: a directory or s3://bucket/prefix "
        "(default: operator.backup_dir, else the working directory)",
    )
    return parser


def _load(args: argparse.Namespace) -> Settings | None:
    try:
        return load_settings(args.env, args.config)
    except ConfigError as exc:
        print("configuration invalid:", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return None


def _check_config(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    print(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False), end="")
    if not args.aws:
        return EXIT_OK
    from worker.ops.preflight import preflight

    errors, warnings = anyio.run(preflight, settings)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    return EXIT_CONFIG if errors else EXIT_OK


def _run(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    from worker.daemon.app import run_daemon

    configure_logging(settings.logging)
    structlog.get_logger("worker.cli").info(
        "config_loaded", env=args.env, files=args.config, queues=sorted(settings.queues)
    )
    anyio.run(run_daemon, settings)
    return EXIT_OK


def _healthcheck(args: argparse.Namespace) -> int:
    try:
        with urllib.request.urlopen(args.url, timeout=3) as response:  # noqa: S310 - local probe
            return EXIT_OK if response.status == 200 else EXIT_CRASH
    except (urllib.error.URLError, OSError):
        return EXIT_CRASH


def _iam_policy(args: argparse.Namespace) -> int:
    from worker.ops.iam import PolicyError, build_policy, render, resolve_sources
    from worker.ops.member_iam import stackset_template

    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    try:
        if args.operator:
            from worker.ops.operator_iam import operator_policy

            policy = operator_policy(settings, args.account_id, member=args.account)
            print(json.dumps(policy, indent=2))
            return EXIT_OK
        if args.stackset:  # the member accounts' role, for a CloudFormation StackSet
            if not settings.accounts:
                raise PolicyError("--stackset: no `accounts` are configured")
            from worker.ops.operator_iam import operator_policy

            policies = [build_policy(settings, member=a.id) for a in settings.accounts]
            operators = [operator_policy(settings, member=a.id) for a in settings.accounts]
            print(json.dumps(stackset_template(settings, policies, operators), indent=2))
            return EXIT_OK
        sources = anyio.run(resolve_sources, settings) if args.resolve_sources else None
        print(render(settings, args.account_id, sources, args.account), end="")
        wide = [n for n, q in settings.queues.items() if getattr(q.target, "source", False)]
        if wide and sources is None:
            print(
                f"iam-policy: {', '.join(sorted(wide))} send back to their redrive sources "
                "(source: true): without --resolve-sources this policy lets them send to every "
                "queue of their account and region; --resolve-sources asks AWS for the sources "
                "and names exactly those",
                file=sys.stderr,
            )
    except PolicyError as exc:
        print(f"iam-policy: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def _operator(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    from worker.ops.commands import run

    # stdout is the command's output (and `--json`); warnings go to stderr beside the
    # progress, the daemon's routine info lines not at all (DEBUG shows everything).
    quiet = "DEBUG" if settings.logging.level == "DEBUG" else "WARNING"
    configure_logging(settings.logging.model_copy(update={"level": quiet}), sys.stderr)

    return anyio.run(run, args, settings)


def _console(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    from worker.console.server import run

    configure_logging(settings.logging)
    return run(args, settings)


def _demo(args: argparse.Namespace) -> int:
    from worker.emulator.demo import run_demo

    return run_demo(args.duration, args.console_listen, verbose=args.verbose)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Counters and histograms without `_created` series: half the series, nothing lost.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    commands = {
        "run": _run,
        "check-config": _check_config,
        "demo": _demo,
        "healthcheck": _healthcheck,
        "iam-policy": _iam_policy,
        "console": _console,
        **dict.fromkeys(("status", "parked", "restore", "pause", "resume", "explain"), _operator),
    }
    return commands[args.command](args)
