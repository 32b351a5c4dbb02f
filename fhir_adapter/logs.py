"""Logging set-up (issue #16): no level prints SQL parameters, result rows or secrets, and no
line can be forged by control characters in what a caller sent."""

from __future__ import annotations

import logging
import re
import sys

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


def configure_logging(level: str) -> None:
    """Plain one-line logs to stderr. Messages carry ids and outcomes only, never patient data."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])  # no-op if already set up
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
