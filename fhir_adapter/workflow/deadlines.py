"""Decision deadlines (regulatory.md §6): 72 hours expedited; otherwise the earlier of
5 California business days and 7 calendar days after receipt."""

from __future__ import annotations

from collections.abc import Container, Mapping
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import holidays

from fhir_adapter.codes import CANONICAL, EXPEDITED_PRIORITIES, REASON_SYSTEM, Reason
from fhir_adapter.fhir.dates import format_instant, period_range
from fhir_adapter.fhir.elements import codes_in

DEADLINE_WARNING_EXTENSION = f"{CANONICAL}/StructureDefinition/deadline-warning"

CALIFORNIA = ZoneInfo("America/Los_Angeles")


class Track(StrEnum):
    EXPEDITED = "expedited"
    STANDARD = "standard"


def track_for(priority: str | None, reasons: Container[str]) -> Track:
    """Expedited for urgent/asap/stat, or for a condition threatening life, limb or function (II.B)."""
    if (priority or "routine") in EXPEDITED_PRIORITIES or Reason.SERIOUS_CONDITION in reasons:
        return Track.EXPEDITED
    return Track.STANDARD


def request_track(request: Mapping[str, Any]) -> Track:
    """The decision track of a second-opinion ServiceRequest, from its priority and the listed
    reasons it gives (the one place that says whether a request is expedited)."""
    return track_for(request.get("priority"), codes_in(request.get("reasonCode"), REASON_SYSTEM))


def is_expedited(request: Mapping[str, Any]) -> bool:
    return request_track(request) is Track.EXPEDITED


def california_holidays(
    years: range | None = None, *, ignore: frozenset[str] = frozenset()
) -> set[date]:
    """California state holidays from the maintained `holidays` calendar, minus named observances."""
    years = years or range(2000, 2101)
    calendar = holidays.country_holidays("US", subdiv="CA", years=list(years))
    return {day for day, name in calendar.items() if not any(n in name for n in ignore)}


def add_business_days(start: date, days: int, closed: Container[date]) -> date:
    """The date `days` business days after `start` (weekends and `closed` days don't count)."""
    current = start
    counted = 0
    while counted < days:
        current += timedelta(days=1)
        if current.weekday() < 5 and current not in closed:
            counted += 1
    return current


def due_at(received: datetime, track: Track, closed: Container[date]) -> datetime:
    """When the decision is due, as an aware datetime.

    Expedited: 72 clock hours (weekends, holidays and clock changes all count as hours).
    Standard: the same California wall-clock time on the earlier of the 5th business day and the
    7th calendar day after receipt, so a daylight-saving change does not move it by an hour.
    """
    if received.tzinfo is None:
        raise ValueError("received must be timezone-aware")
    if track is Track.EXPEDITED:
        return received + timedelta(hours=72)
    local = received.astimezone(CALIFORNIA)
    business = add_business_days(local.date(), 5, closed)
    calendar = local.date() + timedelta(days=7)
    day = min(business, calendar)
    wall = datetime.combine(day, local.time().replace(tzinfo=None), tzinfo=CALIFORNIA)
    return wall


# -- early warning (issue #10): no pended request reaches its deadline silently -----------------

LONGEST_WINDOW = timedelta(days=7)  # the standard track's cap; expedited is 72 hours


def warning_horizon(now: datetime, share: float) -> datetime:
    """No request due later than this can be past `share` of its window yet: only those due by
    then need a look (a window is at most LONGEST_WINDOW)."""
    return now + LONGEST_WINDOW * (1 - share)


_RAISED_PRIORITY = {"routine": "urgent", "urgent": "asap", "asap": "stat", "stat": "stat"}


def past_warning_share(task: Mapping[str, Any], share: float, now: datetime) -> bool:
    """Whether `now` is past `share` of the Task's decision window (restriction.period)."""
    span = period_range((task.get("restriction") or {}).get("period") or {})
    if span is None:
        return False
    start, due = span
    return now >= start + (due - start) * share


def is_flagged(task: Mapping[str, Any]) -> bool:
    return any(e.get("url") == DEADLINE_WARNING_EXTENSION for e in task.get("extension") or [])


def flag_for_review(task: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A copy of the Task with its priority raised one step and the warning recorded on it."""
    flagged = dict(task)
    flagged["priority"] = _RAISED_PRIORITY.get(str(task.get("priority") or "routine"), "urgent")
    flagged["extension"] = [
        *(task.get("extension") or []),
        {"url": DEADLINE_WARNING_EXTENSION, "valueDateTime": format_instant(now)},
    ]
    return flagged
