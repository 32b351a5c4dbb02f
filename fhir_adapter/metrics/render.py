"""The metrics report as JSON, CSV and the public HTML page (pure; charts are server-side SVG)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import jinja2

from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.metrics.core import (
    SHARE_METRICS,
    TIME_METRICS,
    TRACKS,
    Figures,
    Metric,
    MetricsReport,
    Population,
)
from fhir_adapter.workflow.deadlines import Track

TITLES: dict[Metric, str] = {
    Metric.APPROVED: "Requests approved",
    Metric.DENIED: "Requests denied",
    Metric.APPROVED_AFTER_EXTENSION: "Requests approved after the review time was extended",
    Metric.APPROVED_AFTER_APPEAL: "Requests approved after an appeal",
    Metric.AVERAGE_HOURS: "Average time from request to decision",
    Metric.MEDIAN_HOURS: "Median time from request to decision",
}
EXPLANATIONS: dict[Metric, str] = {
    Metric.APPROVED: "Of the requests we decided, how many we approved.",
    Metric.DENIED: "Of the requests we decided, how many we denied.",
    Metric.APPROVED_AFTER_EXTENSION: (
        "Of the requests we decided, how many we approved after taking extra time to review "
        "them (for example because more information was needed)."
    ),
    Metric.APPROVED_AFTER_APPEAL: (
        "Of the requests we decided, how many we first denied and then approved because the "
        "member appealed."
    ),
    Metric.AVERAGE_HOURS: (
        "The average number of hours between receiving a request and deciding it."
    ),
    Metric.MEDIAN_HOURS: (
        "Half of the requests were decided in this many hours or less, half took longer."
    ),
}
TRACK_NAMES = {
    Track.STANDARD: "Standard",
    Track.EXPEDITED: "Expedited (urgent)",
    None: "All requests",
}
POPULATION_NAMES = {
    Population.AUTHORIZATION_REQUIRED: "Requests that needed prior authorization",
    Population.ALL_REQUESTS: (
        "All second-opinion requests, including in-network referrals that need no authorization"
    ),
}
COUNTING = (
    "A request is counted in the period in which it was first decided (days in California "
    "time). Requests that needed prior authorization are all decided requests except "
    "in-network second opinions, which need no authorization; a second table counts those too. "
    "Time is measured in hours from when the plan received the request to its first decision. "
    "A request not decided in time counts as denied. Requests still waiting for a decision at "
    "the end of the period are listed, not counted. Appeals count once the plan has decided them."
)
_TRACK_COLORS = {Track.STANDARD: "#1f4e79", Track.EXPEDITED: "#7a3000"}  # >= 7:1 on white


def fmt_value(metric: Metric, value: float | None) -> str:
    if value is None:
        return "no requests decided"
    if metric in TIME_METRICS:
        days = f" ({value / 24:.1f} days)" if value >= 48 else ""  # long waits read better in days
        return f"{value:.1f} hours{days}"
    return f"{value * 100:.1f}%"


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def figures_json(figures: Figures) -> dict[str, Any]:
    shares = {
        metric.value: {"count": figures.count(metric), "share": _rounded(figures.share(metric), 4)}
        for metric in SHARE_METRICS
    }
    return {
        "decided": figures.decided,
        "pendingAtEnd": figures.pending_at_end,
        **shares,
        Metric.AVERAGE_HOURS.value: _rounded(figures.average_hours, 2),
        Metric.MEDIAN_HOURS.value: _rounded(figures.median_hours, 2),
    }


def to_json(report: MetricsReport) -> dict[str, Any]:
    """The report as plain JSON: per population, per track (and `all`), counts, shares, hours."""
    return {
        "period": {
            "start": report.period.start.isoformat(),
            "end": report.period.end.isoformat(),
            "timeZone": "America/Los_Angeles",
        },
        "asOf": format_instant(report.as_of),
        "counting": COUNTING,
        "populations": {
            population.value: {
                (track.value if track else "all"): figures_json(report.get(population, track))
                for track in (*TRACKS, None)
            }
            for population in Population
        },
    }


CSV_HEADER = ("population", "track", "metric", "count", "decided", "value", "unit")


def to_csv(report: MetricsReport) -> str:
    """One row per population, track and metric; shares as fractions, times in hours."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for population in Population:
        for track in (*TRACKS, None):
            figures = report.get(population, track)
            name = track.value if track else "all"
            for metric in Metric:
                value = figures.value(metric)
                shown = "" if value is None else f"{value:.4f}"
                if metric in TIME_METRICS:
                    writer.writerow(
                        (population, name, metric, figures.decided, figures.decided, shown, "h")
                    )
                else:
                    count = figures.count(metric)
                    writer.writerow((population, name, metric, count, figures.decided, shown, "1"))
    return out.getvalue()


# -- the public page ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value_text: str
    y: int
    width: float
    color: str


@dataclass(frozen=True, slots=True)
class Chart:
    """A horizontal bar chart, one bar per track, drawn as SVG by the template."""

    id: str
    title: str
    description: str
    bars: tuple[Bar, ...]
    height: int
    axis_max_text: str


CHART_LEFT = 170  # where bars start (the labels sit left of it)
CHART_WIDTH = 330  # the longest bar


def _chart(metric: Metric, report: MetricsReport) -> Chart:
    population = Population.AUTHORIZATION_REQUIRED
    values = {track: report.get(population, track).value(metric) for track in TRACKS}
    if metric in TIME_METRICS:
        top = max([v for v in values.values() if v is not None] or [0.0])
        scale = _nice_ceiling(top)
        axis = f"{scale:g} hours"
    else:
        scale, axis = 1.0, "100%"
    bars = tuple(
        Bar(
            label=TRACK_NAMES[track],
            value_text=fmt_value(metric, values[track]),
            y=10 + i * 40,
            width=_bar_width(values[track], scale),
            color=_TRACK_COLORS[track],
        )
        for i, track in enumerate(TRACKS)
    )
    description = "; ".join(f"{b.label}: {b.value_text}" for b in bars)
    return Chart(
        id=f"chart-{metric.value}",
        title=TITLES[metric],
        description=f"Bar chart. {description}.",
        bars=bars,
        height=10 + len(bars) * 40 + 20,
        axis_max_text=axis,
    )


def _bar_width(value: float | None, scale: float) -> float:
    return 0.0 if value is None or scale <= 0 else round(CHART_WIDTH * min(value / scale, 1.0), 1)


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten at or above `value` (an axis end)."""
    if value <= 0:
        return 1.0
    power = 1.0
    while power * 10 < value:
        power *= 10
    while power > value:
        power /= 10
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("fhir_adapter.metrics", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def to_html(report: MetricsReport, *, plan_name: str) -> str:
    """The page a plan posts: per metric a sentence, a table and a bar chart; no script."""
    return (
        _environment()
        .get_template("metrics.html.j2")
        .render(plan_name=plan_name, **html_context(report))
    )


def html_context(report: MetricsReport) -> dict[str, Any]:
    """What metrics_sections.html.j2 shows (the review workspace's numbers page includes it)."""
    headline = Population.AUTHORIZATION_REQUIRED
    sections = [
        {
            "metric": metric,
            "title": TITLES[metric],
            "explanation": EXPLANATIONS[metric],
            "is_time": metric in TIME_METRICS,
            "rows": [
                {
                    "track": TRACK_NAMES[track],
                    "decided": report.get(headline, track).decided,
                    "count": None
                    if metric in TIME_METRICS
                    else report.get(headline, track).count(metric),
                    "value": fmt_value(metric, report.get(headline, track).value(metric)),
                }
                for track in (*TRACKS, None)
            ],
            "chart": _chart(metric, report),
        }
        for metric in Metric
    ]
    populations = [
        {
            "name": POPULATION_NAMES[population],
            "rows": [
                {
                    "track": TRACK_NAMES[track],
                    "decided": report.get(population, track).decided,
                    "pending": report.get(population, track).pending_at_end,
                    "values": [
                        fmt_value(metric, report.get(population, track).value(metric))
                        for metric in Metric
                    ],
                }
                for track in (*TRACKS, None)
            ],
        }
        for population in Population
    ]
    return {
        "period": report.period,
        "as_of": report.as_of.date().isoformat(),
        "counting": COUNTING,
        "sections": sections,
        "populations": populations,
        "metric_titles": [TITLES[m] for m in Metric],
        "chart_left": CHART_LEFT,
        "chart_width": CHART_WIDTH,
    }


FORMATS = ("json", "csv", "html")


def render_report(report: MetricsReport, fmt: str, *, plan_name: str) -> str:
    """The report in one of FORMATS, as text ending in a newline."""
    if fmt == "json":
        return json.dumps(to_json(report), indent=2) + "\n"
    if fmt == "csv":
        return to_csv(report)
    if fmt == "html":
        return to_html(report, plan_name=plan_name)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
