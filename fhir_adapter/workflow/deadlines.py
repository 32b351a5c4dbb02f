"""Decision deadlines (regulatory.md §6): 72 hours expedited; otherwise the earlier of
5 California business days and 7 calendar days after receipt."""

from __future__ import annotations

from collections.abc import Container
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

import holidays

from fhir_adapter.workflow.codes import EXPEDITED_PRIORITIES, Reason

CALIFORNIA = ZoneInfo("America/Los_Angeles")


class Track(StrEnum):
    EXPEDITED = "expedited"
    STANDARD = "standard"


def track_for(priority: str | None, reasons: Container[str]) -> Track:
    """Expedited for urgent/asap/stat, or for a condition threatening life, limb or function (II.B)."""
    if (priority or "routine") in EXPEDITED_PRIORITIES or Reason.SERIOUS_CONDITION in reasons:
        return Track.EXPEDITED
    return Track.STANDARD


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
