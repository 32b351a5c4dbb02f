"""FHIR date, dateTime and instant values as UTC ranges, the way search compares them (pure)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache

MIN_INSTANT = datetime(1, 1, 2, tzinfo=UTC)
MAX_INSTANT = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

_DATE = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?P<fraction>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


@lru_cache(maxsize=4096)
def date_range(text: str) -> tuple[datetime, datetime] | None:
    """The UTC instants a FHIR date/dateTime/instant covers, `[low, high]`; None when malformed.

    `2026` covers the whole year, `2026-11-25` the whole day; a time without a zone is read as UTC.
    Cached: the same dates are indexed and searched again and again (the answer is immutable).
    """
    match = _DATE.match(text.strip())
    if not match:
        return None
    parts = match.groupdict()
    try:
        year = int(parts["year"])
        month = int(parts["month"] or 1)
        day = int(parts["day"] or 1)
        hour = int(parts["hour"] or 0)
        minute = int(parts["minute"] or 0)
        second = int(parts["second"] or 0)
        micro = int(((parts["fraction"] or ".0")[1:] + "000000")[:6])
        low = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError:
        return None
    if parts["tz"] and parts["tz"] != "Z":
        sign = 1 if parts["tz"][0] == "+" else -1
        offset = timedelta(hours=int(parts["tz"][1:3]), minutes=int(parts["tz"][4:6]))
        low = _clamp_sub(low, sign * offset)
    if parts["month"] is None:
        high = low.replace(year=year + 1) if year < 9999 else MAX_INSTANT
    elif parts["day"] is None:
        high = low.replace(year=year + 1, month=1) if month == 12 else low.replace(month=month + 1)
    elif parts["hour"] is None:
        high = low + timedelta(days=1)
    elif parts["second"] is None:
        high = low + timedelta(minutes=1)
    elif parts["fraction"] is None:
        high = low + timedelta(seconds=1)
    else:
        return _clamp(low), _clamp(low)
    return _clamp(low), _clamp(high - _ONE_US)


def period_range(period: dict[str, object]) -> tuple[datetime, datetime] | None:
    """A Period's range: open ends reach to the earliest/latest instant we store."""
    start, end = period.get("start"), period.get("end")
    if start is None and end is None:
        return None
    low_range = date_range(start) if isinstance(start, str) else None
    high_range = date_range(end) if isinstance(end, str) else None
    return (
        low_range[0] if low_range else MIN_INSTANT,
        high_range[1] if high_range else MAX_INSTANT,
    )


def format_instant(moment: datetime) -> str:
    """An instant in FHIR form, in UTC with millisecond precision."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clamp(moment: datetime) -> datetime:
    return min(max(moment, MIN_INSTANT), MAX_INSTANT)


def _clamp_sub(moment: datetime, delta: timedelta) -> datetime:
    try:
        return moment - delta
    except OverflowError:
        return MIN_INSTANT if delta > timedelta(0) else MAX_INSTANT
