"""Decision deadlines across weekends, California holidays and daylight-saving changes."""

from datetime import UTC, datetime

import pytest

from fhir_adapter.codes import REASON_SYSTEM
from fhir_adapter.workflow.deadlines import (
    CALIFORNIA,
    Track,
    add_business_days,
    california_holidays,
    due_at,
    is_expedited,
    request_track,
    track_for,
)

CLOSED = california_holidays(range(2025, 2028))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("received", "due", "why"),
    [
        # Wed before Thanksgiving: 5 business days skip Thu 26 + Fri 27 (holidays) -> Fri 12-04;
        # 7 calendar days -> Wed 12-02, the earlier, binds (regulatory.md §6 worked example).
        (
            "2026-11-25T10:00:00-08:00",
            "2026-12-02T10:00:00-08:00",
            "holidays: 7 calendar days bind",
        ),
        (
            "2026-12-23T10:00:00-08:00",
            "2026-12-30T10:00:00-08:00",
            "Christmas: 7 calendar days bind",
        ),
        # Saturday receipt: 5 business days end Friday, a day before the 7th calendar day.
        ("2026-10-10T10:00:00-07:00", "2026-10-16T10:00:00-07:00", "weekend: 5 business days bind"),
        # Monday before Cesar Chavez Day (Tue 03-31): 5 business days -> Tue 04-07, 7 days -> Mon 04-06.
        ("2026-03-30T09:00:00-07:00", "2026-04-06T09:00:00-07:00", "Cesar Chavez Day"),
        # Fall back on Sun 11-01: same wall-clock time a week later, 7 days + 1 hour in UTC.
        ("2026-10-30T10:00:00-07:00", "2026-11-06T10:00:00-08:00", "DST ends"),
        # Spring forward on Sun 03-08: 7 days - 1 hour in UTC.
        ("2026-03-06T10:00:00-08:00", "2026-03-13T10:00:00-07:00", "DST starts"),
    ],
    ids=lambda v: v if " " in v else None,
)
def test_standard_track(received: str, due: str, why: str) -> None:
    assert due_at(at(received), Track.STANDARD, CLOSED) == at(due), why


def test_the_issue_example_is_due_on_december_second() -> None:
    received = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
    assert (
        due_at(received, Track.STANDARD, CLOSED).astimezone(CALIFORNIA).date().isoformat()
        == "2026-12-02"
    )


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (
            "2026-11-25T10:00:00-08:00",
            "2026-11-28T18:00:00+00:00",
        ),  # over Thanksgiving: hours count
        (
            "2026-10-30T10:00:00-07:00",
            "2026-11-02T17:00:00+00:00",
        ),  # across fall back: 72 real hours
        ("2026-03-06T10:00:00-08:00", "2026-03-09T18:00:00+00:00"),  # across spring forward
    ],
)
def test_expedited_track_is_72_clock_hours(received: str, due: str) -> None:
    assert due_at(at(received), Track.EXPEDITED, CLOSED) == at(due)


@pytest.mark.parametrize(
    ("priority", "reasons", "track"),
    [
        ("routine", set(), Track.STANDARD),
        (None, {"questioned-surgery"}, Track.STANDARD),
        ("urgent", set(), Track.EXPEDITED),
        ("asap", set(), Track.EXPEDITED),
        ("stat", set(), Track.EXPEDITED),
        ("routine", {"serious-condition"}, Track.EXPEDITED),
    ],
)
def test_track_for(priority: str | None, reasons: set[str], track: Track) -> None:
    assert track_for(priority, reasons) is track


def test_california_state_holidays_are_closed_days() -> None:
    for day in ("2026-11-26", "2026-11-27", "2026-12-25", "2026-03-31", "2027-01-01"):
        assert datetime.fromisoformat(day).date() in CLOSED


def test_business_days_skip_weekends_and_holidays() -> None:
    friday = datetime(2026, 11, 20).date()
    assert add_business_days(friday, 1, CLOSED).isoformat() == "2026-11-23"
    assert add_business_days(friday, 4, CLOSED).isoformat() == "2026-11-30"


def test_naive_receipt_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        due_at(datetime(2026, 11, 25, 10), Track.STANDARD, CLOSED)


def test_the_early_warning_comes_at_the_configured_share_of_the_window() -> None:
    from fhir_adapter.workflow.deadlines import flag_for_review, is_flagged, past_warning_share

    task = {
        "priority": "routine",
        "restriction": {"period": {"start": "2026-11-25T18:00:00Z", "end": "2026-12-02T18:00:00Z"}},
    }
    assert not past_warning_share(task, 0.75, datetime(2026, 11, 30, 23, 0, tzinfo=UTC))
    assert past_warning_share(task, 0.75, datetime(2026, 12, 1, 0, 1, tzinfo=UTC))
    flagged = flag_for_review(task, datetime(2026, 12, 1, tzinfo=UTC))
    assert flagged["priority"] == "urgent" and is_flagged(flagged) and not is_flagged(task)
    assert (
        flag_for_review({"priority": "stat"}, datetime(2026, 12, 1, tzinfo=UTC))["priority"]
        == "stat"
    )


def _request(priority: str | None, *reasons: str) -> dict[str, object]:
    request: dict[str, object] = {
        "reasonCode": [{"coding": [{"system": REASON_SYSTEM, "code": r}]} for r in reasons]
    }
    if priority:
        request["priority"] = priority
    return request


@pytest.mark.parametrize(
    ("request_", "expedited"),
    [
        (_request(None), False),
        (_request("routine", "unclear-diagnosis"), False),
        (_request("urgent"), True),
        (_request("asap"), True),
        (_request("stat"), True),
        (_request("routine", "serious-condition"), True),  # II.B: life, limb or function
        ({"reasonCode": [{"coding": [{"system": "urn:x", "code": "serious-condition"}]}]}, False),
    ],
)
def test_is_expedited_is_the_one_place_that_says_it(
    request_: dict[str, object], expedited: bool
) -> None:
    assert is_expedited(request_) is expedited
    assert request_track(request_) is (Track.EXPEDITED if expedited else Track.STANDARD)
