"""Logging of `fastctx serve`: one format for fastctx's and granian's lines, text or JSON."""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

from fastctx.config import Settings

#: One line per request when `fastctx serve --access-log`; silent otherwise.
ACCESS_LOGGER = "fastctx.access"
# What every LogRecord has; anything else on a record was passed with `extra=` and is a field.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _name(record: logging.LogRecord) -> str:
    # granian logs as "_granian" and "_granian.serve"; readers know it as granian.
    return record.name[1:] if record.name.startswith("_granian") else record.name


def _time(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """`2026-01-31T12:00:00.000Z INFO fastctx: message`, for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_time(record)} {record.levelname} {_name(record)}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's own fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": _name(record),
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(settings: Settings) -> dict[str, Any]:
    """The dictConfig of a `fastctx serve` process; granian applies it in every worker too."""
    formatter = JsonFormatter if settings.log_format == "json" else TextFormatter
    level = settings.log_level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"fastctx": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "fastctx",
                "stream": "ext://sys.stderr",
            },
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # granian sets this one's level from its own log_level; its lines go to the root's
            # handler, so they look like fastctx's.
            "_granian": {"handlers": [], "propagate": True},
            # Off unless asked for, whatever the level: it names every request.
            ACCESS_LOGGER: {"level": "INFO" if settings.access_log else "CRITICAL"},
            # granian's own access line shows the raw path, which holds tokens: never on.
            "granian.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
        },
    }
