"""Where retrypolicy's events go: structlog (the default) or the standard library's ``logging``.

The transports call ``log.<level>(event, **fields)``, structlog's convention. :func:`as_logger`
chooses once, at construction, what takes those calls:

* ``None``: ``structlog.get_logger("retrypolicy")``, rendered as structlog is configured;
* a structlog logger (anything with structlog's ``bind``, ``debug``, ``info``, ``warning`` and
  ``error``), used as it is;
* a :class:`logging.Logger` or :class:`logging.LoggerAdapter`, wrapped in :class:`StdlibEvents`:
  one record per event, at the same level, whose message is the event name followed by its
  fields as ``key=value`` and whose ``record.retrypolicy`` is a dict of the event and its fields.

Anything else is refused with :class:`~retrypolicy.ConfigurationError`. Nothing here runs on
the success path: events are logged only after a failed attempt.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import structlog

from ._errors import ConfigurationError

__all__ = ["StdlibEvents", "as_logger", "logfmt"]

_STRUCTLOG_METHODS = ("bind", "debug", "info", "warning", "error")


def as_logger(logger: object) -> Any:
    """What the transports log through (see the module docs); chosen once, at construction."""
    if logger is None:
        return structlog.get_logger("retrypolicy")
    if isinstance(logger, StdlibEvents):
        return logger
    if isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
        return StdlibEvents(logger)
    if all(callable(getattr(logger, name, None)) for name in _STRUCTLOG_METHODS):
        return logger
    raise ConfigurationError(
        "logger must be a logging.Logger, a logging.LoggerAdapter or a structlog logger "
        f"(with bind, debug, info, warning and error methods), got {type(logger).__name__}"
    )


def logfmt(fields: dict[str, Any]) -> str:
    """``key=value`` pairs separated by spaces; a value with a space, quote or ``=`` in it (or an
    empty one) in double quotes, JSON style; ``None`` values left out."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        text = value if isinstance(value, str) else str(value)
        if not text or any(c.isspace() or c in '"=\\' for c in text):
            text = json.dumps(text, ensure_ascii=False)
        parts.append(f"{key}={text}")
    return " ".join(parts)


class StdlibEvents:
    """Takes structlog-style calls (``warning(event, **fields)``) and logs them to a stdlib
    :class:`logging.Logger` or :class:`logging.LoggerAdapter`.

    Each event is one record of that logger at the event's level:

    * ``record.getMessage()``: ``"retrypolicy.retry_scheduled platform=wechat code=-1 ..."``
      (the event name, then :func:`logfmt` of the fields; no ``%`` formatting, ``args`` is empty);
    * ``record.retrypolicy``: ``{"event": "retrypolicy.retry_scheduled", "platform": "wechat",
      "code": -1, ...}``, for filters and JSON formatters.

    An adapter's ``process()`` runs as for its own calls (its prefix, its ``extra``); the
    ``retrypolicy`` attribute is added to whatever ``extra`` it returns.
    """

    __slots__ = ("_adapter", "_logger")

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self._adapter = logger if isinstance(logger, logging.LoggerAdapter) else None
        self._logger = logger

    def __repr__(self) -> str:
        return f"StdlibEvents({self._logger!r})"

    def _log(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        message = f"{event} {logfmt(fields)}" if fields else event
        data = {"event": event, **fields}
        adapter = self._adapter
        if adapter is None:
            self._logger.log(level, message, extra={"retrypolicy": data})
            return
        message, kwargs = adapter.process(message, {"extra": {"retrypolicy": data}})
        kwargs["extra"] = {**(kwargs.get("extra") or {}), "retrypolicy": data}  # the default process() drops ours
        adapter.logger.log(level, message, **kwargs)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._log(logging.CRITICAL, event, fields)
