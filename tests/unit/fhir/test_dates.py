"""FHIR dates as UTC ranges."""

from datetime import UTC, datetime

import pytest

from fhir_adapter.fhir.dates import date_range, format_instant, period_range


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        (
            "2026",
            datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        ),
        (
            "2024-02",
            datetime(2024, 2, 1, tzinfo=UTC),
            datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        ),
        (
            "2026-12",
            datetime(2026, 12, 1, tzinfo=UTC),
            datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        ),
        (
            "2026-11-25",
            datetime(2026, 11, 25, tzinfo=UTC),
            datetime(2026, 11, 25, 23, 59, 59, 999999, tzinfo=UTC),
        ),
        (
            "2026-11-25T10:00:00-08:00",
            datetime(2026, 11, 25, 18, tzinfo=UTC),
            datetime(2026, 11, 25, 18, 0, 0, 999999, tzinfo=UTC),
        ),
        (
            "2026-11-25T10:00:00.250Z",
            datetime(2026, 11, 25, 10, 0, 0, 250000, tzinfo=UTC),
            datetime(2026, 11, 25, 10, 0, 0, 250000, tzinfo=UTC),
        ),
    ],
    ids=["year", "leap-month", "december", "day", "offset", "instant"],
)
def test_date_range_covers_the_precision_given(text: str, low: datetime, high: datetime) -> None:
    assert date_range(text) == (low, high)


@pytest.mark.parametrize(
    "text", ["", "26", "2026-13", "2026-02-30", "2026-11-25T25:00:00Z", "tomorrow"]
)
def test_date_range_rejects_malformed_dates(text: str) -> None:
    assert date_range(text) is None


def test_period_without_end_is_open() -> None:
    low, high = period_range({"start": "2026-11-25"}) or (None, None)
    assert low == datetime(2026, 11, 25, tzinfo=UTC)
    assert high is not None and high.year == 9999


def test_empty_period_has_no_range() -> None:
    assert period_range({}) is None


def test_format_instant_is_utc_with_milliseconds() -> None:
    moment = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)
    assert format_instant(moment) == "2026-11-25T10:00:00.123Z"
