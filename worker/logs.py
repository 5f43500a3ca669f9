"""structlog: one JSON object per line in containers, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from worker.settings import LoggingSettings


def configure_logging(settings: LoggingSettings, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    level = logging.getLevelNamesMapping()[settings.level]
    renderer: structlog.typing.Processor
    if settings.format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # botocore and aiohttp chatter stays out unless asked for.
    logging.basicConfig(level=logging.WARNING, stream=stream)
