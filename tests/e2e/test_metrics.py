"""CMS-0057-F metrics end to end: a year of requests through the API and the workflow on each
store backend, then the CLI and the `MeasureReport/$pa-metrics` operation, checked against the
answers worked out by hand in tests/metrics_year.py."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from fhir_adapter.bootstrap import Container
from fhir_adapter.cli import app
from fhir_adapter.errors import NotFoundError
from fhir_adapter.metrics.core import AppealOutcome, Period, Population
from fhir_adapter.metrics.records import ExtensionReason
from fhir_adapter.workflow.deadlines import Track
from tests.fakes import FrozenClock
from tests.metrics_year import AS_OF, SeededYear, at, seed_year, submit

EXAMPLES = Path(__file__).parents[2] / "examples" / "metrics"


@pytest.fixture
async def year(client: httpx.AsyncClient, container: Container, clock: FrozenClock) -> SeededYear:
    return await seed_year(client, container, clock)


async def cli(database_url: str, *args: str) -> Result:
    """The CLI in a thread of its own (it runs its own event loop), on the test's database."""
    env = {"FHIR_ADAPTER_DATABASE_URL": database_url}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


def figures(data: dict[str, Any], population: str, track: str) -> dict[str, Any]:
    found: dict[str, Any] = data["populations"][population][track]
    return found


async def test_the_seeded_year_gives_the_hand_computed_metrics(
    year: SeededYear, database_url: str
) -> None:
    result = await cli(
        database_url, "metrics", "--from", "2026-01-01", "--to", "2026-12-31", "--as-of", AS_OF
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    std = figures(data, "authorization-required", "standard")
    assert std["decided"] == 6 and std["pendingAtEnd"] == 1
    assert std["approved"] == {"count": 3, "share": 0.5}
    assert std["denied"] == {"count": 3, "share": 0.5}
    assert std["approved-after-extension"] == {"count": 1, "share": 0.1667}
    assert std["approved-after-appeal"] == {"count": 1, "share": 0.1667}
    assert std["average-decision-hours"] == 74.67  # (0 + 0 + 30 + 200 + 50 + 168) / 6
    assert std["median-decision-hours"] == 40.0  # (30 + 50) / 2
    exp = figures(data, "authorization-required", "expedited")
    assert exp["decided"] == 2
    assert exp["approved"] == {"count": 1, "share": 0.5}
    assert exp["approved-after-appeal"] == {"count": 1, "share": 0.5}
    assert exp["approved-after-extension"] == {"count": 0, "share": 0.0}
    assert exp["average-decision-hours"] == 40.0 and exp["median-decision-hours"] == 40.0
    every_std = figures(data, "all-requests", "standard")
    assert every_std["decided"] == 7 and every_std["approved"]["count"] == 4
    assert every_std["average-decision-hours"] == 64.0 and every_std["median-decision-hours"] == 30
    every_exp = figures(data, "all-requests", "expedited")
    assert every_exp["decided"] == 3 and every_exp["approved"]["count"] == 2
    assert every_exp["average-decision-hours"] == 26.67
    assert every_exp["median-decision-hours"] == 20.0


async def test_examples_metrics_is_what_the_command_renders_for_the_seeded_year(
    year: SeededYear, database_url: str
) -> None:
    """examples/metrics/2026.* (rendered by `python -m tests.metrics_year examples/metrics`)."""
    for fmt in ("json", "csv", "html"):
        result = await cli(
            database_url, "metrics", "--from", "2026-01-01", "--to", "2026-12-31", "--as-of",
            AS_OF, "--format", fmt,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert result.stdout == (EXAMPLES / f"2026.{fmt}").read_text(encoding="utf-8"), fmt


async def test_appeals_count_only_once_decided(year: SeededYear, database_url: str) -> None:
    """As of mid-May 2026 only #3's appeal (decided 2026-05-01) had been decided."""
    result = await cli(
        database_url, "metrics", "--from", "2026-01-01", "--to", "2026-12-31", "--as-of",
        "2026-05-15T00:00:00Z",
    )  # fmt: skip
    data = json.loads(result.stdout)
    assert (
        figures(data, "authorization-required", "standard")["approved-after-appeal"]["count"] == 1
    )
    assert (
        figures(data, "authorization-required", "expedited")["approved-after-appeal"]["count"] == 0
    )


async def test_the_next_year_counts_the_request_decided_in_it(
    year: SeededYear, database_url: str
) -> None:
    result = await cli(
        database_url, "metrics", "--from", "2027-01-01", "--to", "2027-12-31", "--format", "csv"
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    decided = {
        (r["population"], r["track"]): int(r["decided"]) for r in rows if r["metric"] == "approved"
    }
    assert decided[("authorization-required", "standard")] == 1  # #8, approved 2027-01-04
    assert decided[("authorization-required", "expedited")] == 0
    median = next(
        r
        for r in rows
        if (r["population"], r["track"], r["metric"])
        == ("authorization-required", "standard", "median-decision-hours")
    )
    assert float(median["value"]) == pytest.approx(6 * 24)  # 2026-12-29 to 2027-01-04


async def test_the_measure_report_operation_answers_the_same(
    year: SeededYear, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    clock.now = at(3, 1, 2027)
    answer = await client.get(
        "/MeasureReport/$pa-metrics",
        params={"periodStart": "2026-01-01", "periodEnd": "2026-12-31"},
    )
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["resourceType"] == "MeasureReport" and report["type"] == "summary"
    assert report["period"] == {"start": "2026-01-01", "end": "2026-12-31"}
    groups = {g["code"]["coding"][0]["code"]: g for g in report["group"]}
    approved = groups["approved"]
    assert approved["measureScore"]["value"] == 50.0  # 4 of 8, both tracks
    standard, expedited = approved["stratifier"][0]["stratum"]
    assert standard["measureScore"]["value"] == 50.0 and expedited["measureScore"]["value"] == 50.0
    everyone_standard = approved["stratifier"][1]["stratum"][0]
    assert everyone_standard["measureScore"]["value"] == pytest.approx(57.14)
    median = groups["median-decision-hours"]["stratifier"][0]["stratum"]
    assert [s["measureScore"]["value"] for s in median] == [40.0, 40.0]


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"periodEnd": "2026-12-31"}, "periodStart"),
        ({"periodStart": "2026-01-01", "periodEnd": "31/12/2026"}, "periodEnd"),
        ({"periodStart": "2026-12-31", "periodEnd": "2026-01-01"}, "periodEnd"),
    ],
    ids=["missing start", "not a date", "ends before it starts"],
)
async def test_a_bad_period_is_a_400_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, str], where: str
) -> None:
    answer = await client.get("/MeasureReport/$pa-metrics", params=params)
    assert answer.status_code == 400, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [where]


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_recording_appeals_and_extensions_through_the_cli(
    client: httpx.AsyncClient, clock: FrozenClock, database_url: str
) -> None:
    """The CLI runs on the machine's clock: the requests are made a few days before it."""
    now = datetime.now(UTC).replace(microsecond=0)
    denied = await submit(client, clock, "denied", now - timedelta(days=3))
    approved = await submit(client, clock, "out-of-network", now - timedelta(days=3))
    pended = await submit(client, clock, "review", now - timedelta(days=1))
    clock.now = now
    not_denied = await cli(
        database_url, "appeals", "record", f"Task/{approved}", "--outcome", "overturned",
        "--decided-at", iso(now - timedelta(days=1)),
    )  # fmt: skip
    assert not_denied.exit_code == 1 and "only a denial can be appealed" in not_denied.output
    response = (await client.get("/ClaimResponse", params={"identifier": denied})).json()
    claim_response = response["entry"][0]["resource"]["id"]
    recorded = await cli(
        database_url, "appeals", "record", f"ClaimResponse/{claim_response}", "--outcome",
        "overturned", "--decided-at", iso(now - timedelta(days=1)),
    )  # fmt: skip
    assert recorded.exit_code == 0, recorded.output
    # Recording again corrects the record instead of adding a second one.
    again = await cli(
        database_url, "appeals", "record", denied, "--outcome", "upheld", "--decided-at",
        iso(now - timedelta(hours=1)),
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    appeals = (await client.get("/Task", params={"based-on": f"Task/{denied}"})).json()
    assert appeals["total"] == 1
    appeal = appeals["entry"][0]["resource"]
    assert appeal["businessStatus"]["coding"][0]["code"] == "upheld"
    assert appeal["meta"]["versionId"] == "2"
    provenance = (await client.get("/Provenance", params={"target": f"Task/{appeal['id']}"})).json()
    assert provenance["total"] == 2
    backwards = await cli(
        database_url, "appeals", "record", denied, "--outcome", "upheld", "--decided-at",
        iso(now - timedelta(hours=2)), "--received-at", iso(now - timedelta(hours=1)),
    )  # fmt: skip
    assert backwards.exit_code == 1 and "decided after it is received" in backwards.output
    future = await cli(
        database_url, "appeals", "record", denied, "--outcome", "upheld", "--decided-at",
        iso(now + timedelta(days=1)),
    )  # fmt: skip
    assert future.exit_code == 1 and "in the future" in future.output
    # An extension: at most 14 days beyond the original time frame, once, for undecided requests.
    task = (await client.get(f"/Task/{pended}")).json()
    due = datetime.fromisoformat(task["restriction"]["period"]["end"])
    too_long = await cli(
        database_url, "extensions", "record", pended, "--reason", "member-request", "--until",
        iso(due + timedelta(days=15)),
    )  # fmt: skip
    assert too_long.exit_code == 1 and "at most 14 days" in too_long.output
    extended = await cli(
        database_url, "extensions", "record", pended, "--reason", "member-request", "--until",
        iso(due + timedelta(days=5)),
    )  # fmt: skip
    assert extended.exit_code == 0, extended.output
    task = (await client.get(f"/Task/{pended}")).json()
    assert datetime.fromisoformat(task["restriction"]["period"]["end"]) == due + timedelta(days=5)
    twice = await cli(
        database_url, "extensions", "record", pended, "--reason", "member-request", "--until",
        iso(due + timedelta(days=6)),
    )  # fmt: skip
    assert twice.exit_code == 1 and "extended already" in twice.output
    decided = await cli(
        database_url, "extensions", "record", approved, "--reason", "member-request", "--until",
        iso(due + timedelta(days=5)),
    )  # fmt: skip
    assert decided.exit_code == 1 and "only an undecided request" in decided.output


async def test_an_extended_request_is_not_denied_at_the_original_deadline(
    client: httpx.AsyncClient, container: Container, clock: FrozenClock
) -> None:
    pended = await submit(client, clock, "review", at(6, 2))
    await container.metrics.extend(
        pended, ExtensionReason.PROVIDER_REQUEST, until=at(6, 2).replace(day=12)
    )
    clock.now = at(6, 10)  # past the original 7 days, before the new due date
    assert await container.workflow.expire_overdue() == 0
    clock.now = at(6, 12)
    assert await container.workflow.expire_overdue() == 1  # the new due date binds
    assert (await client.get(f"/Task/{pended}")).json()["status"] == "rejected"
    with pytest.raises(NotFoundError, match="not a second-opinion request"):
        await container.metrics.record_appeal(
            "Task/unknown", AppealOutcome.OVERTURNED, decided_at=at(6, 11)
        )


async def test_a_pas_submission_counts_like_any_request(
    client: httpx.AsyncClient, container: Container, clock: FrozenClock
) -> None:
    """Requests that come through Da Vinci PAS `Claim/$submit` are second-opinion requests too."""
    clock.now = at(3, 10)
    bundle = json.loads((EXAMPLES.parent / "pas" / "claim-submit-request.json").read_text())
    answer = await client.post("/Claim/$submit", json=bundle)
    assert answer.status_code == 200, answer.text
    [record] = await container.metrics.records()
    assert record.decided_at == at(3, 10) and record.received_at == at(3, 10)
    assert record.determination == "approved" and record.authorization_needed is False  # NA


def appeal_parameters(**values: str) -> dict[str, Any]:
    kinds = {"outcome": "valueCode", "decidedAt": "valueDateTime", "receivedAt": "valueDateTime"}
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": name, kinds[name]: value} for name, value in values.items()],
    }


async def test_recording_an_appeal_over_the_api(
    client: httpx.AsyncClient, container: Container, clock: FrozenClock
) -> None:
    denied = await submit(client, clock, "denied", at(4, 14))
    approved = await submit(client, clock, "out-of-network", at(4, 14))
    clock.now = at(5, 2)
    answer = await client.post(
        f"/Task/{denied}/$record-appeal",
        json=appeal_parameters(
            outcome="overturned",
            decidedAt="2026-05-01T17:00:00Z",
            receivedAt="2026-04-20T17:00:00Z",
        ),
    )
    assert answer.status_code == 200, answer.text
    appeal = answer.json()
    assert appeal["resourceType"] == "Task" and appeal["basedOn"] == [
        {"reference": f"Task/{denied}"}
    ]
    assert appeal["businessStatus"]["coding"][0]["code"] == "overturned"
    report = await container.metrics.report(Period(date(2026, 1, 1), date(2026, 12, 31)))
    assert report.get(Population.AUTHORIZATION_REQUIRED, Track.STANDARD).approved_after_appeal == 1
    not_denied = await client.post(
        f"/Task/{approved}/$record-appeal",
        json=appeal_parameters(outcome="upheld", decidedAt="2026-05-01T17:00:00Z"),
    )
    assert not_denied.status_code == 409, not_denied.text
    assert "only a denial can be appealed" in not_denied.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"outcome": "won", "decidedAt": "2026-05-01T17:00:00Z"}, "outcome"),
        ({"outcome": "upheld"}, "decidedAt"),
        ({"outcome": "upheld", "decidedAt": "2026-05-01"}, "decidedAt"),
        (
            {"outcome": "upheld", "decidedAt": "2026-05-01T17:00:00Z", "receivedAt": "2026-04"},
            "receivedAt",
        ),
    ],
    ids=["unknown outcome", "no decision time", "a date only", "a month only"],
)
async def test_bad_appeal_parameters_are_a_422_naming_the_parameter(
    client: httpx.AsyncClient, clock: FrozenClock, values: dict[str, str], where: str
) -> None:
    denied = await submit(client, clock, "denied", at(4, 14))
    clock.now = at(5, 2)
    answer = await client.post(f"/Task/{denied}/$record-appeal", json=appeal_parameters(**values))
    assert answer.status_code == 422, answer.text
    expressions = [e for i in answer.json()["issue"] for e in i.get("expression", [])]
    assert expressions == [f"Parameters.parameter.where(name='{where}')"]
    assert (await client.get("/Task", params={"based-on": f"Task/{denied}"})).json()["total"] == 0
