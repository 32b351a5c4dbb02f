"""CMS-0057-F prior-authorization metrics, computed from the requests of a period (pure).

regulatory.md §4.4 (Q13): a plan publishes every year, at plan level and split standard /
expedited, the share of requests approved, denied, approved after an extended review time frame
and approved after appeal, and the average and median time from receipt to decision.

What counts, precisely (docs/workflow.md, "Prior-authorization metrics", says the same):

- A request counts in the period when its **first final decision** (approved or denied) falls
  on a day of the period, in the plan's time zone (California). Requests still undecided at the
  end of the period are not in any share or time; they are reported as `pending_at_end`.
  Requests withdrawn before any decision are not counted at all.
- A denial because the deadline passed (42 CFR 438.404(c)(5)) is a denial, timed at the expiry.
- Two populations. `authorization-required` (the published figures): requests that needed a
  prior-authorization decision, that is every decided request except in-network approvals that
  need no authorization (PAS review action `NA`). `all-requests`: the same plus those `NA`
  approvals, counted as approvals. Whether an in-network second opinion is a "PA request" is an
  open question (regulatory.md §8.6), so both are computed and shown.
- Shares have the decided requests of the population and track as denominator:
  approved and denied are the first decision; "approved after an extended time frame" are the
  approvals whose time frame was extended; "approved after appeal" are the denials whose appeal
  was overturned (recorded on or before `as_of`, so zero until appeals are recorded).
- Time to decision is in hours, from receipt by the plan (the Task's `restriction.period.start`,
  when the decision clock started) to the first final decision (that ClaimResponse version's
  `created`); average (mean) and median over the decided requests.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from fhir_adapter.workflow.deadlines import CALIFORNIA, Track


class Determination(StrEnum):
    """Where a request stands for the report."""

    APPROVED = "approved"
    DENIED = "denied"
    PENDED = "pended"  # no final decision yet


class AppealOutcome(StrEnum):
    """The plan's decision on the member's appeal of a denial (42 CFR 438.408)."""

    UPHELD = "upheld"  # the denial stands
    OVERTURNED = "overturned"  # the appeal was approved


class Population(StrEnum):
    AUTHORIZATION_REQUIRED = "authorization-required"  # the published figures
    ALL_REQUESTS = "all-requests"  # also in-network approvals that need no authorization


class Metric(StrEnum):
    """The published metrics, one MeasureReport group each (profiles/Measure-pa-metrics.json)."""

    APPROVED = "approved"
    DENIED = "denied"
    APPROVED_AFTER_EXTENSION = "approved-after-extension"
    APPROVED_AFTER_APPEAL = "approved-after-appeal"
    AVERAGE_HOURS = "average-decision-hours"
    MEDIAN_HOURS = "median-decision-hours"


SHARE_METRICS = (
    Metric.APPROVED,
    Metric.DENIED,
    Metric.APPROVED_AFTER_EXTENSION,
    Metric.APPROVED_AFTER_APPEAL,
)
TIME_METRICS = (Metric.AVERAGE_HOURS, Metric.MEDIAN_HOURS)
TRACKS = (Track.STANDARD, Track.EXPEDITED)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One second-opinion request as the store records it."""

    task_id: str
    track: Track
    received_at: datetime
    determination: Determination
    decided_at: datetime | None = None  # the first final decision
    authorization_needed: bool = True  # False: an in-network approval (review action NA)
    extended: bool = False  # the decision time frame was extended
    appeal: AppealOutcome | None = None
    appeal_decided_at: datetime | None = None

    def __post_init__(self) -> None:
        if (self.determination is Determination.PENDED) != (self.decided_at is None):
            raise ValueError(f"Task/{self.task_id}: a decision time goes with a decision")
        for moment in (self.received_at, self.decided_at, self.appeal_decided_at):
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"Task/{self.task_id}: times must be timezone-aware")

    @property
    def hours_to_decision(self) -> float | None:
        if self.decided_at is None:
            return None
        return (self.decided_at - self.received_at).total_seconds() / 3600


@dataclass(frozen=True, slots=True)
class Figures:
    """The metrics of one population and one track (or both tracks, `track` None)."""

    population: Population
    track: Track | None
    decided: int
    approved: int
    denied: int
    approved_after_extension: int
    approved_after_appeal: int
    pending_at_end: int
    hours: tuple[float, ...] = field(repr=False)  # receipt to decision, one per decided request

    def count(self, metric: Metric) -> int:
        return {
            Metric.APPROVED: self.approved,
            Metric.DENIED: self.denied,
            Metric.APPROVED_AFTER_EXTENSION: self.approved_after_extension,
            Metric.APPROVED_AFTER_APPEAL: self.approved_after_appeal,
        }[metric]

    def share(self, metric: Metric) -> float | None:
        """The fraction of decided requests (0..1); None when nothing was decided."""
        return self.count(metric) / self.decided if self.decided else None

    @property
    def average_hours(self) -> float | None:
        return statistics.fmean(self.hours) if self.hours else None

    @property
    def median_hours(self) -> float | None:
        return statistics.median(self.hours) if self.hours else None

    def value(self, metric: Metric) -> float | None:
        """The metric's value: a fraction for shares, hours for times."""
        if metric is Metric.AVERAGE_HOURS:
            return self.average_hours
        if metric is Metric.MEDIAN_HOURS:
            return self.median_hours
        return self.share(metric)


@dataclass(frozen=True, slots=True)
class Period:
    """Whole days, both ends included, in the plan's time zone."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"the period ends ({self.end}) before it starts ({self.start})")

    @property
    def starts_at(self) -> datetime:
        return datetime.combine(self.start, time(0), tzinfo=CALIFORNIA)

    @property
    def ends_at(self) -> datetime:
        """The first instant after the period."""
        return datetime.combine(self.end + timedelta(days=1), time(0), tzinfo=CALIFORNIA)

    def holds(self, moment: datetime) -> bool:
        return self.starts_at <= moment < self.ends_at


@dataclass(frozen=True, slots=True)
class MetricsReport:
    period: Period
    as_of: datetime  # appeals decided after this are not counted
    figures: tuple[Figures, ...]

    def get(self, population: Population, track: Track | None) -> Figures:
        return next(f for f in self.figures if f.population is population and f.track is track)


def compute(records: Iterable[RequestRecord], period: Period, *, as_of: datetime) -> MetricsReport:
    """The report for `period`: every population, each track and both together."""
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    decided: list[RequestRecord] = []
    pending: list[RequestRecord] = []
    for record in records:
        if record.decided_at is not None and period.holds(record.decided_at):
            decided.append(record)
        elif record.received_at < period.ends_at and (
            record.decided_at is None or record.decided_at >= period.ends_at
        ):
            pending.append(record)
    figures = []
    for population in Population:
        for track in (*TRACKS, None):
            figures.append(
                _figures(
                    population,
                    track,
                    [r for r in decided if _in(r, population, track)],
                    [r for r in pending if _in(r, population, track)],
                    as_of,
                )
            )
    return MetricsReport(period, as_of.astimezone(UTC), tuple(figures))


def _in(record: RequestRecord, population: Population, track: Track | None) -> bool:
    if track is not None and record.track is not track:
        return False
    return population is Population.ALL_REQUESTS or record.authorization_needed


def _figures(
    population: Population,
    track: Track | None,
    decided: list[RequestRecord],
    pending: list[RequestRecord],
    as_of: datetime,
) -> Figures:
    approved = [r for r in decided if r.determination is Determination.APPROVED]
    denied = [r for r in decided if r.determination is Determination.DENIED]
    overturned = [
        r
        for r in denied
        if r.appeal is AppealOutcome.OVERTURNED
        and r.appeal_decided_at is not None
        and r.appeal_decided_at <= as_of
    ]
    return Figures(
        population=population,
        track=track,
        decided=len(decided),
        approved=len(approved),
        denied=len(denied),
        approved_after_extension=sum(1 for r in approved if r.extended),
        approved_after_appeal=len(overturned),
        # A pended request waits for a person's decision: it counts in both populations.
        pending_at_end=len(pending),
        hours=tuple(h for r in decided if (h := r.hours_to_decision) is not None),
    )
