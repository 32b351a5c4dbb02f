"""The metrics report as a FHIR MeasureReport of the `pa-metrics` Measure (pure).

One group per metric (profiles/Measure-pa-metrics.json); the group's score is both tracks
together, and two stratifiers split it: `track` (standard / expedited, the published figures:
requests that needed prior authorization) and `track-all-requests` (the same with the in-network
approvals that need no authorization counted as approvals).
"""

from __future__ import annotations

from typing import Any

from fhir_adapter.codes import CANONICAL
from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.metrics.core import (
    TIME_METRICS,
    TRACKS,
    Figures,
    Metric,
    MetricsReport,
    Population,
)

MEASURE_URL = f"{CANONICAL}/Measure/pa-metrics"
METRIC_SYSTEM = f"{CANONICAL}/CodeSystem/pa-metric"
POPULATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"
UCUM = "http://unitsofmeasure.org"
STRATIFIERS = {
    Population.AUTHORIZATION_REQUIRED: "track",
    Population.ALL_REQUESTS: "track-all-requests",
}

# The codes of CodeSystem pa-metric: the metrics, the tracks, the stratifiers.
METRIC_CODES = frozenset(
    {m.value for m in Metric} | {t.value for t in TRACKS} | set(STRATIFIERS.values())
)


def _concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _population(code: str, count: int) -> dict[str, Any]:
    return {"code": _concept(POPULATION_SYSTEM, code), "count": count}


def _score(metric: Metric, value: float | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if metric in TIME_METRICS:
        return {"value": round(value, 2), "unit": "h", "system": UCUM, "code": "h"}
    return {"value": round(value * 100, 2), "unit": "%", "system": UCUM, "code": "%"}


def _populations(metric: Metric, figures: Figures) -> list[dict[str, Any]]:
    if metric in TIME_METRICS:  # continuous variable: the decided requests are measured
        return [
            _population("initial-population", figures.decided),
            _population("measure-population", figures.decided),
        ]
    return [
        _population("initial-population", figures.decided),
        _population("denominator", figures.decided),
        _population("numerator", figures.count(metric)),
    ]


def _scored(metric: Metric, figures: Figures, base: dict[str, Any]) -> dict[str, Any]:
    base["population"] = _populations(metric, figures)
    score = _score(metric, figures.value(metric))
    if score is not None:
        base["measureScore"] = score
    return base


def measure_report(
    report: MetricsReport, *, reporter: str, generated: str | None = None
) -> dict[str, Any]:
    """A `summary` MeasureReport for the report's period; `reporter` is the plan Organization."""
    groups = []
    for metric in Metric:
        headline = report.get(Population.AUTHORIZATION_REQUIRED, None)
        group = _scored(metric, headline, {"code": _concept(METRIC_SYSTEM, metric.value)})
        group["stratifier"] = [
            {
                "code": [_concept(METRIC_SYSTEM, STRATIFIERS[population])],
                "stratum": [
                    _scored(
                        metric,
                        report.get(population, track),
                        {"value": _concept(METRIC_SYSTEM, track.value)},
                    )
                    for track in TRACKS
                ],
            }
            for population in (Population.AUTHORIZATION_REQUIRED, Population.ALL_REQUESTS)
        ]
        groups.append(group)
    return {
        "resourceType": "MeasureReport",
        "status": "complete",
        "type": "summary",
        "measure": MEASURE_URL,
        "date": generated or format_instant(report.as_of),
        "reporter": {"reference": reporter},
        "period": {
            "start": report.period.start.isoformat(),  # whole days in California time
            "end": report.period.end.isoformat(),
        },
        "group": groups,
    }
