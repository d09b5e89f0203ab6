"""Logging: one line per event, as text or (``WHEELFARM_LOG_FORMAT=json``) as JSON objects.

``configure_logging()`` sets up the root logger once per process; ``logging_config()`` is the
same configuration as a ``logging.config.dictConfig`` dictionary, which gunicorn takes as its
``logconfig_dict`` option so its own loggers (``gunicorn.error``, ``gunicorn.access``) write
lines of the same format.

Fields passed with ``extra={...}`` (for example ``route``, ``status``, ``job_id``) become
keys of the JSON object, and ``key=value`` pairs after the message in text format. The JSON
formatter is a few lines over the standard library: no dependency for that.

Environment: ``WHEELFARM_LOG_FORMAT`` (``text``, the default, or ``json``) and
``WHEELFARM_LOG_LEVEL`` (``INFO`` by default).
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")

# The attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update(_extra(record))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <logger>: <message> key=value ...`` on one line (tracebacks follow).

    Line breaks inside the message (a decoded ``%0A`` in a logged path, say) are written
    as ``\\n``, so nobody can forge a log line.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\r", "\\r").replace("\n", "\\n")
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {message}"
        pairs = " ".join(f"{k}={_text_value(v)}" for k, v in _extra(record).items())
        if pairs:
            line += " " + pairs
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text_value(value: object) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' "=\n')) else text


def logging_config(
    env: Mapping[str, str] | None = None, gunicorn_access: bool = False
) -> dict[str, Any]:
    """The ``dictConfig`` for the chosen format and level (also for gunicorn's loggers).

    The app logs each request itself (logger ``wheelfarm.request``, with route, status and
    duration as fields), so gunicorn's text access lines are off unless ``gunicorn_access``.
    """
    env = os.environ if env is None else env
    fmt = env.get("WHEELFARM_LOG_FORMAT", "text").strip().lower() or "text"
    if fmt not in FORMATS:
        raise ValueError(f"WHEELFARM_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {fmt!r}")
    level = env.get("WHEELFARM_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if not isinstance(logging.getLevelName(level), int):
        raise ValueError(f"WHEELFARM_LOG_LEVEL: unknown level {level!r}")
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "wheelfarm",
        "stream": "ext://sys.stderr",
    }
    own = {"level": level, "handlers": ["wheelfarm"], "propagate": False}
    access = {**own, "level": level if gunicorn_access else "WARNING"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"wheelfarm": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {"wheelfarm": handler},
        "root": {"level": level, "handlers": ["wheelfarm"]},
        "loggers": {"gunicorn.error": own, "gunicorn.access": access},
    }


def configure_logging(env: Mapping[str, str] | None = None) -> None:
    """Route every logger's records to stderr, one line per event, in the chosen format."""
    logging.config.dictConfig(logging_config(env))
