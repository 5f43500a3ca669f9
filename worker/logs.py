"""structlog: one JSON object per line in containers, readable lines on a terminal.

Records from the standard library's loggers (botocore, aiohttp, asyncio) go through the same
renderer, so "one JSON object per line" holds for every line the process writes.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from worker.settings import LoggingSettings

# Libraries speak at WARNING and above unless the configured level is DEBUG.
LIBRARY_LEVEL = logging.WARNING


def configure_logging(
    settings: LoggingSettings,
    stream: TextIO | None = None,
    *,
    quiet: frozenset[str] = frozenset(),
    once: frozenset[str] = frozenset(),
) -> None:
    """`quiet`: events not written at all (the demo leaves out its per-message lines);
    `once`: events written the first time only (the demo shows one of a kind)."""
    seen: set[str] = set()
    stream = stream or sys.stderr
    level = logging.getLevelNamesMapping()[settings.level]
    renderer: structlog.typing.Processor
    if settings.format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]

    def drop_quiet(
        logger: object, name: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        kind = event.get("event")
        if kind in quiet or kind in seen:
            raise structlog.DropEvent
        if kind in once:
            seen.add(kind)
        return event

    structlog.configure(
        processors=[
            drop_quiet,
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    handler = OwnHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, OwnHandler)]:
        root.removeHandler(old)  # configured again (tests, the demo): one handler, not two
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if level <= logging.DEBUG else LIBRARY_LEVEL)


class OwnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler this module installs (and replaces when configured again)."""
