"""Shared by the examples: print retrypolicy's structlog events as short plain-text lines."""

from __future__ import annotations

import sys

import structlog
from structlog.typing import EventDict, WrappedLogger

ALWAYS = ("event", "level", "timestamp")
SHOWN = ("code", "subcode", "category", "attempt", "delay", "hook_called", "message", "reason", "url")


def configure_logging() -> None:
    """Print retrypolicy's events (retry_scheduled, token_renewed, gave_up...) in plain text.

    Every event also carries platform, method, status_code, elapsed, request_id and description;
    the examples show the fields that tell the story.
    """

    def trim(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        return {k: v for k, v in event.items() if k in ALWAYS or (k in SHOWN and v is not None)}

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            trim,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
    )
