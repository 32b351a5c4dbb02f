"""The CMS-0057-F metrics on a hand-made year of requests, with the answers worked out by hand."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

import pytest

from fhir_adapter.fhir.validation import validate_resource
from fhir_adapter.metrics.core import (
    AppealOutcome,
    Determination,
    Metric,
    MetricsReport,
    Period,
    Population,
    RequestRecord,
    compute,
)
from fhir_adapter.metrics.measure import MEASURE_URL, measure_report
from fhir_adapter.metrics.render import to_csv, to_html, to_json
from fhir_adapter.workflow.deadlines import Track

YEAR = Period(date(2026, 1, 1), date(2026, 12, 31))
AS_OF = datetime(2027, 2, 1, tzinfo=UTC)
MARCH = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)  # 09:00 in California
STD, EXP = Track.STANDARD, Track.EXPEDITED
APPROVED, DENIED, PENDED = Determination.APPROVED, Determination.DENIED, Determination.PENDED


def decided(
    task_id: str,
    track: Track,
    determination: Determination,
    hours: float,
    *,
    received: datetime = MARCH,
    **extra: object,
) -> RequestRecord:
    return RequestRecord(
        task_id,
        track,
        received,
        determination,
        received + timedelta(hours=hours),
        **extra,  # type: ignore[arg-type]
    )


RECORDS = [
    decided("s1", STD, APPROVED, 24),
    decided("s2", STD, APPROVED, 48, extended=True),
    decided(
        "s3",
        STD,
        DENIED,
        10,
        appeal=AppealOutcome.OVERTURNED,
        appeal_decided_at=datetime(2026, 4, 1, tzinfo=UTC),
    ),
    decided(
        "s4",
        STD,
        DENIED,
        2,
        appeal=AppealOutcome.UPHELD,
        appeal_decided_at=datetime(2026, 4, 1, tzinfo=UTC),
    ),
    decided("s5-in-network", STD, APPROVED, 0, authorization_needed=False),
    RequestRecord("s6-pended", STD, datetime(2026, 12, 30, 18, tzinfo=UTC), PENDED),
    # received in 2026, decided in 2027: pending at the end of 2026, not decided in it
    decided("s7", STD, APPROVED, 40, received=datetime(2026, 12, 31, 18, tzinfo=UTC)),
    # decided in 2025: another year
    decided("s8", STD, APPROVED, 5, received=datetime(2025, 12, 30, 18, tzinfo=UTC)),
    decided("e1", EXP, APPROVED, 6),
    decided(  # its appeal was decided after the report's as-of time: not counted yet
        "e2",
        EXP,
        DENIED,
        72,
        appeal=AppealOutcome.OVERTURNED,
        appeal_decided_at=datetime(2027, 3, 1, tzinfo=UTC),
    ),
    decided("e3-in-network", EXP, APPROVED, 0, authorization_needed=False),
]


@pytest.fixture(scope="module")
def report() -> MetricsReport:
    return compute(RECORDS, YEAR, as_of=AS_OF)


def test_standard_requests_needing_authorization(report: MetricsReport) -> None:
    std = report.get(Population.AUTHORIZATION_REQUIRED, STD)
    assert (std.decided, std.approved, std.denied) == (4, 2, 2)
    assert std.share(Metric.APPROVED) == 0.5
    assert std.share(Metric.DENIED) == 0.5
    assert std.share(Metric.APPROVED_AFTER_EXTENSION) == 0.25  # s2
    assert std.share(Metric.APPROVED_AFTER_APPEAL) == 0.25  # s3 overturned; s4 upheld
    assert std.average_hours == pytest.approx((24 + 48 + 10 + 2) / 4)  # 21
    assert std.median_hours == pytest.approx((10 + 24) / 2)  # 17: the two middle of 2 10 24 48
    assert std.pending_at_end == 2  # s6 undecided, s7 decided only in 2027


def test_expedited_requests_needing_authorization(report: MetricsReport) -> None:
    exp = report.get(Population.AUTHORIZATION_REQUIRED, EXP)
    assert (exp.decided, exp.approved, exp.denied) == (2, 1, 1)
    assert exp.approved_after_appeal == 0  # e2's appeal is after the as-of time
    assert exp.average_hours == pytest.approx(39)
    assert exp.median_hours == pytest.approx(39)


def test_both_tracks_together(report: MetricsReport) -> None:
    both = report.get(Population.AUTHORIZATION_REQUIRED, None)
    assert (both.decided, both.approved, both.denied) == (6, 3, 3)
    assert both.average_hours == pytest.approx((24 + 48 + 10 + 2 + 6 + 72) / 6)  # 27
    assert both.median_hours == pytest.approx(17)  # 2 6 [10 24] 48 72


def test_in_network_approvals_count_only_in_the_all_requests_population(
    report: MetricsReport,
) -> None:
    std = report.get(Population.ALL_REQUESTS, STD)
    assert (std.decided, std.approved, std.denied) == (5, 3, 2)
    assert std.share(Metric.APPROVED) == pytest.approx(0.6)
    assert std.average_hours == pytest.approx(84 / 5)  # 16.8
    assert std.median_hours == pytest.approx(10)
    exp = report.get(Population.ALL_REQUESTS, EXP)
    assert (exp.decided, exp.approved) == (3, 2)
    assert exp.average_hours == pytest.approx(26)
    assert exp.median_hours == pytest.approx(6)


def test_the_period_is_whole_days_in_california() -> None:
    # 23:30 on New Year's Eve in California is already 2027 in UTC: it belongs to 2026.
    late = datetime(2027, 1, 1, 7, 30, tzinfo=UTC)
    early = datetime(2026, 1, 1, 7, 30, tzinfo=UTC)  # 23:30 on 2025-12-31 in California
    records = [
        RequestRecord("late", STD, late - timedelta(hours=3), APPROVED, late),
        RequestRecord("early", STD, early - timedelta(hours=3), APPROVED, early),
    ]
    figures = compute(records, YEAR, as_of=AS_OF).get(Population.AUTHORIZATION_REQUIRED, STD)
    assert figures.decided == 1
    assert figures.hours == (3.0,)


def test_nothing_decided_has_no_shares_and_no_times() -> None:
    figures = compute([], YEAR, as_of=AS_OF).get(Population.AUTHORIZATION_REQUIRED, EXP)
    assert figures.decided == 0
    assert figures.share(Metric.APPROVED) is None
    assert figures.average_hours is None and figures.median_hours is None


def test_bad_records_and_periods_are_refused() -> None:
    with pytest.raises(ValueError, match="decision time"):
        RequestRecord("x", STD, MARCH, APPROVED)
    with pytest.raises(ValueError, match="timezone"):
        RequestRecord("x", STD, datetime(2026, 3, 2), PENDED)
    with pytest.raises(ValueError, match="before it starts"):
        Period(date(2026, 2, 1), date(2026, 1, 1))


def test_json_and_csv_carry_the_same_numbers(report: MetricsReport) -> None:
    data = to_json(report)
    std = data["populations"]["authorization-required"]["standard"]
    assert std["decided"] == 4 and std["pendingAtEnd"] == 2
    assert std["approved"] == {"count": 2, "share": 0.5}
    assert std["approved-after-appeal"] == {"count": 1, "share": 0.25}
    assert std["average-decision-hours"] == 21.0 and std["median-decision-hours"] == 17.0
    assert data["populations"]["all-requests"]["expedited"]["median-decision-hours"] == 6.0
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert len(rows) == 2 * 3 * len(Metric)
    row = next(
        r
        for r in rows
        if (r["population"], r["track"], r["metric"])
        == ("authorization-required", "standard", "approved-after-extension")
    )
    assert (row["count"], row["decided"], row["value"], row["unit"]) == ("1", "4", "0.2500", "1")


def test_the_measure_report_is_valid_fhir_with_a_group_per_metric(report: MetricsReport) -> None:
    resource = measure_report(report, reporter="Organization/plan")
    validate_resource(resource)
    assert resource["measure"] == MEASURE_URL
    assert resource["period"] == {"start": "2026-01-01", "end": "2026-12-31"}
    groups = {g["code"]["coding"][0]["code"]: g for g in resource["group"]}
    assert list(groups) == [m.value for m in Metric]
    appeal = groups["approved-after-appeal"]
    headline, everyone = appeal["stratifier"]
    standard = headline["stratum"][0]
    assert standard["value"]["coding"][0]["code"] == "standard"
    counts = {p["code"]["coding"][0]["code"]: p["count"] for p in standard["population"]}
    assert counts == {"initial-population": 4, "denominator": 4, "numerator": 1}
    assert standard["measureScore"] == {
        "value": 25.0,
        "unit": "%",
        "system": "http://unitsofmeasure.org",
        "code": "%",
    }
    assert everyone["stratum"][0]["measureScore"]["value"] == 20.0
    median = groups["median-decision-hours"]
    assert median["measureScore"]["value"] == 17.0 and median["measureScore"]["code"] == "h"


def test_the_page_has_a_table_and_a_described_chart_per_metric(report: MetricsReport) -> None:
    page = to_html(report, plan_name="Demo <Plan>")
    assert "Demo &lt;Plan&gt;" in page  # escaped
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert page.count("<caption>") == len(Metric) + 2
    assert page.count('role="img"') == len(Metric)
    assert page.count("<desc id=") == len(Metric)
    assert 'scope="col"' in page and 'scope="row"' in page
    assert "Standard: 50.0%; Expedited (urgent): 50.0%" in page
    assert "Standard: 17.0 hours; Expedited (urgent): 39.0 hours" in page
