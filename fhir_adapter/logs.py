"""Logging set-up (issue #16): no level prints SQL parameters, result rows or secrets, and no
line can be forged by control characters in what a caller sent.

Two formats (FHIR_ADAPTER_LOG_FORMAT): `text`, one plain line per record, and `json` (issue #13),
one JSON object per line: time, level, logger, message, and for access lines the request id,
method, route template, path, status and duration. The same messages either way: ids and
outcomes, never patient data."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

# Loggers of libraries that, at DEBUG, print statement parameters (aiosqlite logs each call with
# its arguments), result rows (SQLAlchemy) or request details (httpx logs URLs with their query
# strings). They speak at WARNING and above whatever FHIR_ADAPTER_LOG_LEVEL says.
QUIET_LOGGERS = (
    "aiosqlite",
    "asyncpg",
    "sqlalchemy",
    "alembic.runtime.migration",
    "httpx",
    "httpcore",
    "hpack",
    "h11",
    "multipart",
    "python_multipart",
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")


def escape_control(text: str) -> str:
    """`text` on one line: control characters as visible escapes (`\\n`, `\\x1b`)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class EscapingFormatter(logging.Formatter):
    """Formats the message with its arguments, then escapes control characters in it, so a path
    or value holding `\\n` or ANSI codes cannot start a fake line (tracebacks stay multi-line)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        safe = logging.makeLogRecord(record.__dict__)
        safe.message = escape_control(record.getMessage())
        return super().formatMessage(safe)


# What an access line adds (api/middleware.py passes them as `extra`); nothing else is copied
# from a record into a JSON line.
ACCESS_FIELDS = ("request_id", "method", "route", "path", "status", "duration_ms")


class JsonFormatter(logging.Formatter):
    """One JSON object per line. JSON escapes control characters itself; the message is also
    passed through `escape_control` so both formats show the same text."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": escape_control(record.getMessage()),
        }
        for name in ACCESS_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = escape_control(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


_structured = False


def structured() -> bool:
    """Whether a JSON formatter is installed: the access log adds its fields only then."""
    return _structured


def use_structured(on: bool = True) -> None:
    global _structured
    _structured = on


def configure_logging(level: str, log_format: str = "text") -> None:
    """One-line logs to stderr, plain or JSON. Messages carry ids and outcomes only, never
    patient data."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
        use_structured()
    else:
        handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])  # no-op if already set up
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
