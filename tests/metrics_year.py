"""A year (2026) of second-opinion requests seeded through the real API and workflow, with the
CMS-0057-F metrics worked out by hand, and the command that renders examples/metrics/ from it.

    .venv/bin/python -m tests.metrics_year examples/metrics

seeds a new SQLite database, then runs `fhir-adapter metrics` on it for json, csv and html.

The requests (times are when the plan received them; hours are to the decision):

| # | track     | example                    | what happens                                    | hours |
|---|-----------|----------------------------|-------------------------------------------------|-------|
| 1 | standard  | in-network-specialist-care | approved in network, no authorization (NA)      | 0     |
| 2 | standard  | out-of-network             | authorized out of network (A1) by rule          | 0     |
| 3 | standard  | denied                     | denied by rule (A3); appeal overturned          | 0     |
| 4 | standard  | review                     | pended; a reviewer approves (A1)                | 30    |
| 5 | standard  | review                     | pended; time frame extended; approved (A1)      | 200   |
| 6 | standard  | review                     | pended; a reviewer denies (A3); appeal upheld   | 50    |
| 7 | standard  | review                     | pended; nobody decides: denied at the deadline  | 168   |
| 8 | standard  | review                     | received 2026-12-29, approved in 2027           | -     |
| 9 | expedited | expedited                  | approved in network, no authorization (NA)      | 0     |
| 10| expedited | review, priority urgent    | pended; a reviewer approves (A1)                | 20    |
| 11| expedited | review, priority urgent    | pended; a reviewer denies (A3); appeal overturned | 60  |

Requests that needed authorization (the published figures), decided in 2026:
- standard: #2-#7, 6 decided: approved 3 (50%), denied 3 (50%), approved after extension 1
  (#5, 16.67%), approved after appeal 1 (#3, 16.67%); hours 0 0 30 50 168 200: average
  448 / 6 = 74.67, median (30 + 50) / 2 = 40; #8 pending at the end of the year.
- expedited: #10, #11: approved 1 (50%), denied 1 (50%), after appeal 1 (#11, 50%);
  hours 20 60: average 40, median 40.
All requests (NA approvals counted as approvals):
- standard: 7 decided, approved 4 (57.14%); average 448 / 7 = 64, median 30.
- expedited: 3 decided, approved 2 (66.67%); average 80 / 3 = 26.67, median 20.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from fhir_adapter.bootstrap import Container
from fhir_adapter.metrics.core import AppealOutcome
from fhir_adapter.metrics.records import ExtensionReason
from tests.factories import example_request
from tests.fakes import FrozenClock

REVIEWER = "https://directory.example/fhir/Practitioner/reviewer-1"
OON_PROVIDER = "https://directory.example/fhir/PractitionerRole/oon-1"
AS_OF = "2027-03-01T00:00:00Z"  # when the examples were rendered: every appeal counted


def at(month: int, day: int, year: int = 2026) -> datetime:
    """17:00 UTC: 09:00 or 10:00 in California, a working morning."""
    return datetime(year, month, day, 17, 0, tzinfo=UTC)


@dataclass
class SeededYear:
    tasks: dict[int, str] = field(default_factory=dict)  # request number -> Task id


def decide_body(decision: str, reason: str | None = None) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": "decision", "valueCode": decision},
        {"name": "reviewer", "valueReference": {"reference": REVIEWER}},
        {"name": "reviewerNPI", "valueString": "1972819302"},
        {
            "name": "reviewerSpecialty",
            "valueCodeableConcept": {
                "coding": [{"system": "http://nucc.org/provider-taxonomy", "code": "207X00000X"}]
            },
        },
    ]
    if decision == "approved-out-of-network":
        parameters.append({"name": "provider", "valueReference": {"reference": OON_PROVIDER}})
    if reason:
        parameters.append({"name": "reason", "valueString": reason})
    return {"resourceType": "Parameters", "parameter": parameters}


async def submit(
    client: httpx.AsyncClient,
    clock: FrozenClock,
    name: str,
    when: datetime,
    *,
    urgent: bool = False,
) -> str:
    """Submit an example request received at `when`; its Task id."""
    clock.now = when
    bundle = example_request(name, f"-y{uuid.uuid4().hex[:8]}")
    if name == "denied":  # the example's denial is coverage that ended before the request
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] == "Coverage":
                entry["resource"]["period"]["end"] = (when - timedelta(days=1)).date().isoformat()
    if urgent:
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] in ("ServiceRequest", "Task"):
                entry["resource"]["priority"] = "urgent"
    answer = await client.post("", json=bundle)
    assert answer.status_code == 200, answer.text
    location = next(
        e["response"]["location"]
        for e in answer.json()["entry"]
        if e["response"]["location"].startswith("Task/")
    )
    return str(location.split("/")[1])


async def decide(
    client: httpx.AsyncClient, clock: FrozenClock, task: str, when: datetime, decision: str
) -> None:
    clock.now = when
    reason = "Not medically necessary (seeded year)" if decision == "denied" else None
    answer = await client.post(f"/Task/{task}/$decide", json=decide_body(decision, reason))
    assert answer.status_code == 200, answer.text


async def seed_year(
    client: httpx.AsyncClient, container: Container, clock: FrozenClock
) -> SeededYear:
    """The eleven requests of the table above, each through the API and the workflow."""
    year = SeededYear()
    t = year.tasks
    t[1] = await submit(client, clock, "in-network-specialist-care", at(2, 3))
    t[2] = await submit(client, clock, "out-of-network", at(3, 10))
    t[3] = await submit(client, clock, "denied", at(4, 14))
    t[4] = await submit(client, clock, "review", at(5, 5))
    await decide(client, clock, t[4], at(5, 5) + timedelta(hours=30), "approved-out-of-network")
    t[5] = await submit(client, clock, "review", at(6, 2))
    clock.now = at(6, 5)
    await container.metrics.extend(
        t[5], ExtensionReason.NEED_INFORMATION, until=at(6, 2) + timedelta(days=16)
    )
    clock.now = at(6, 2) + timedelta(days=7, hours=1)  # past the original deadline: not denied
    assert await container.workflow.expire_overdue() == 0
    await decide(client, clock, t[5], at(6, 2) + timedelta(hours=200), "approved-out-of-network")
    t[6] = await submit(client, clock, "review", at(7, 7))
    await decide(client, clock, t[6], at(7, 7) + timedelta(hours=50), "denied")
    t[7] = await submit(client, clock, "review", at(8, 4))
    clock.now = at(8, 4) + timedelta(days=7)  # the due date: 7 calendar days, same wall clock
    assert await container.workflow.expire_overdue() == 1
    t[8] = await submit(client, clock, "review", at(12, 29))
    t[9] = await submit(client, clock, "expedited", at(9, 1))
    t[10] = await submit(client, clock, "review", at(10, 6), urgent=True)
    await decide(client, clock, t[10], at(10, 6) + timedelta(hours=20), "approved-out-of-network")
    t[11] = await submit(client, clock, "review", at(11, 3), urgent=True)
    await decide(client, clock, t[11], at(11, 3) + timedelta(hours=60), "denied")
    # The year after: #8 decided, and the appeals of #3, #6 and #11 decided.
    await decide(client, clock, t[8], at(1, 4, 2027), "approved-out-of-network")
    clock.now = at(2, 1, 2027)
    for number, outcome, decided in (
        (3, AppealOutcome.OVERTURNED, at(5, 1)),
        (6, AppealOutcome.UPHELD, at(8, 1)),
        (11, AppealOutcome.OVERTURNED, at(11, 20)),
    ):
        await container.metrics.record_appeal(f"Task/{t[number]}", outcome, decided_at=decided)
    return year


async def _seed_database(url: str) -> None:
    from fastapi import FastAPI

    from fhir_adapter.api import handlers
    from fhir_adapter.api.app import create_app
    from fhir_adapter.bootstrap import build_container, demo_directory_file
    from fhir_adapter.config import Settings
    from fhir_adapter.demo.directory import directory_router, load_directory
    from fhir_adapter.directory.client import DirectoryClient
    from tests.tokens import bearer

    directory_app = FastAPI()
    handlers.install(directory_app)
    directory_app.include_router(
        directory_router(load_directory(demo_directory_file())), prefix="/directory/fhir"
    )
    clock = FrozenClock()
    base = "http://testserver/fhir"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=directory_app), base_url="http://directory.test"
    ) as http:
        directory = DirectoryClient(
            http,
            "http://directory.test/directory/fhir",
            network="Organization/medi-cal-network",
        )
        settings = Settings(database_url=url, base_url=base)
        container = await build_container(settings, directory=directory, clock=clock)
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(container=container)),
                base_url=base,
                headers={"content-type": "application/fhir+json", **bearer(container)},
            ) as client:
                await seed_year(client, container, clock)
        finally:
            await container.aclose()


def render_examples(target: Path) -> None:
    """Seed a new database and run `fhir-adapter metrics` on it into `target`/2026.*."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite+aiosqlite:///{Path(scratch) / 'year.db'}"
        asyncio.run(_seed_database(url))
        for fmt in ("json", "csv", "html"):
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "fhir_adapter",
                    "metrics",
                    "--from",
                    "2026-01-01",
                    "--to",
                    "2026-12-31",
                    "--as-of",
                    AS_OF,
                    "--format",
                    fmt,
                    "--output",
                    str(target / f"2026.{fmt}"),
                ],
                check=True,
                env={"FHIR_ADAPTER_DATABASE_URL": url, "PATH": ""},
            )


if __name__ == "__main__":
    render_examples(Path(sys.argv[1] if len(sys.argv) > 1 else "examples/metrics"))
