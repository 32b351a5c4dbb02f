"""The queue's clock: the share of the allowed time used and the time left, as reviewers read it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fhir_adapter.review.workspace import deadline_share, format_left

RECEIVED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DUE = RECEIVED + timedelta(hours=72)


def test_the_share_is_of_the_time_allowed_from_receipt_to_the_deadline() -> None:
    share, left = deadline_share(RECEIVED, DUE, RECEIVED + timedelta(hours=54))
    assert share == 0.75 and left == 18 * 3600


def test_past_the_deadline_the_share_exceeds_one_and_the_time_left_is_overdue() -> None:
    share, left = deadline_share(RECEIVED, DUE, DUE + timedelta(minutes=1))
    assert share is not None and share > 1
    assert format_left(left) == "overdue"


def test_no_recorded_period_means_no_share() -> None:
    assert deadline_share(None, DUE, RECEIVED) == (None, None)
    assert format_left(None) == "no deadline recorded"


def test_time_left_reads_in_days_and_hours_or_hours_and_minutes() -> None:
    assert format_left(2 * 86400 + 5 * 3600 + 59) == "2 d 5 h"
    assert format_left(3 * 3600 + 25 * 60) == "3 h 25 min"
