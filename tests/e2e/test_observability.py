"""Issue #13, operable: /healthz, /readyz, /metrics and JSON logs, on both backends.

Counters are process-wide (prometheus-client's registry), so each test compares what it reads
after its own requests with what it read before them."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter import logs
from fhir_adapter.api.app import create_app
from fhir_adapter.bootstrap import Container
from fhir_adapter.logs import JsonFormatter
from fhir_adapter.store.engine import create_engine
from fhir_adapter.telemetry import readiness

ROOT = "http://testserver"
EXAMPLES = Path(__file__).parents[2] / "examples"


def samples(text_format: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, from the Prometheus text format."""
    found = {}
    for family in text_string_to_metric_families(text_format):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get(f"{ROOT}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(response.text)


def requests_key(
    route: str, status: str, method: str = "GET"
) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = {"method": method, "route": route, "status": status}
    return ("fhir_adapter_http_requests_total", tuple(sorted(labels.items())))


async def test_healthz_answers_without_token_or_database(container: Container) -> None:
    app = create_app(container=container)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ROOT) as bare:
        response = await bare.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]


async def test_readyz_is_ready_when_the_database_answers_at_the_head(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(f"{ROOT}/readyz", headers={"authorization": ""})
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready"}


async def test_readyz_names_a_schema_behind_the_release(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    (head,) = readiness.package_heads()
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        response = await client.get(f"{ROOT}/readyz")
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
    assert response.status_code == 503
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    (issue,) = outcome["issue"]
    assert issue["code"] == "transient"
    assert issue["diagnostics"].startswith("migrations: the database is at 0001")
    assert head in issue["diagnostics"]


async def test_readyz_names_an_unreachable_database(
    client: httpx.AsyncClient, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    unreachable = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    monkeypatch.setattr(container.store, "engine", unreachable)
    try:
        response = await client.get(f"{ROOT}/readyz")
    finally:
        await unreachable.dispose()
    assert response.status_code == 503
    (issue,) = response.json()["issue"]
    assert issue["diagnostics"].startswith("database: unreachable")
    assert "nobody" not in issue["diagnostics"]  # no part of the URL


async def test_metrics_count_requests_by_route_template_never_by_id(
    client: httpx.AsyncClient,
) -> None:
    before = await scrape(client)
    missing = f"no-such-task-{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        assert (await client.get(f"/Task/{missing}")).status_code == 404
    assert (await client.get("/Task", params={"_count": "1"})).status_code == 200
    assert (await client.get(f"{ROOT}/nowhere/{missing}")).status_code == 404
    assert (await client.request(f"X{missing[-8:].upper()}", "/Task")).status_code == 405
    response = await client.get(f"{ROOT}/metrics")
    after = samples(response.text)
    assert missing not in response.text  # ids and raw paths are never labels
    assert missing[-8:].upper() not in response.text  # nor a method a caller made up

    def grew(key: tuple[str, tuple[tuple[str, str], ...]]) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew(requests_key("/fhir/{resource_type}/{id}", "4xx")) == 3
    assert grew(requests_key("/fhir/{resource_type}", "2xx")) == 1
    assert grew(requests_key("unmatched", "4xx")) == 1
    assert grew(requests_key("/fhir/{resource_type}", "4xx", method="other")) == 1
    latency = (
        "fhir_adapter_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/fhir/{resource_type}/{id}")),
    )
    assert grew(latency) == 3
    # The queue figures come from the store, at scrape time.
    assert after[("fhir_adapter_queue_stats_up", ())] == 1.0
    for queue, state in (
        ("workflow_jobs", "evaluate"),
        ("outbox", "pending"),
        ("outbox", "failed"),
    ):
        assert ("fhir_adapter_queue_depth", (("queue", queue), ("state", state))) in after
    assert ("fhir_adapter_dead_letters", (("queue", "outbox"),)) in after
    assert ("fhir_adapter_queue_oldest_due_seconds", (("queue", "outbox"),)) in after


async def test_metrics_count_decisions_and_queued_deliveries(
    client: httpx.AsyncClient, container: Container
) -> None:
    container.settings.metrics_cache_seconds = 0.0
    before = await scrape(client)
    bundle = json.loads((EXAMPLES / "requests" / "in-network-specialist-care.json").read_text())
    assert (await client.post("", json=bundle)).status_code == 200
    after = await scrape(client)
    decided = ("fhir_adapter_decisions_total", (("outcome", "approved-in-network"),))
    assert after.get(decided, 0.0) - before.get(decided, 0.0) == 1
    pending = ("fhir_adapter_queue_depth", (("queue", "outbox"), ("state", "pending")))
    assert after[pending] >= 1  # the provider's and the member's notices are owed


async def test_metrics_are_served_only_to_the_allowed_addresses(container: Container) -> None:
    settings = container.settings.model_copy(update={"metrics_allow": "10.0.0.0/8"})
    app = create_app(settings, container=container)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ROOT) as far:
        refused = await far.get("/metrics")  # the test client is 127.0.0.1
    assert refused.status_code == 403
    assert refused.json()["resourceType"] == "OperationOutcome"
    off = container.settings.model_copy(update={"metrics_enabled": False})
    app = create_app(off, container=container)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ROOT) as near:
        assert (await near.get("/metrics")).status_code == 404
        assert (await near.get("/healthz")).status_code == 200


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What FHIR_ADAPTER_LOG_FORMAT=json writes, at DEBUG, for everything under fhir_adapter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("fhir_adapter")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logs.use_structured()
    try:
        yield stream
    finally:
        logs.use_structured(False)
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_json_log_lines_parse_and_carry_no_patient_data(
    client: httpx.AsyncClient, json_log: io.StringIO
) -> None:
    bundle = json.loads((EXAMPLES / "requests" / "denied.json").read_text())
    secrets: set[str] = set()
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            secrets |= {resource["birthDate"], resource["name"][0]["family"]}
            secrets |= {i["value"] for i in resource["identifier"]}
    assert (await client.post("", json=bundle)).status_code == 200
    family = "Qwertyuiop"
    searched = await client.get("/Patient", params={"family": family})
    assert searched.status_code == 200
    forged = await client.get("/Task/x%0AFAKE%20LINE", headers={"x-request-id": "bad id;"})
    assert forged.status_code in (400, 404)
    lines = json_log.getvalue().splitlines()
    assert lines
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys()
    access = [r for r in records if r["logger"] == "fhir_adapter.access"]
    search = next(r for r in access if r["path"] == "/fhir/Patient")
    assert search["route"] == "/fhir/{resource_type}"
    assert search["status"] == 200 and search["method"] == "GET"
    assert isinstance(search["duration_ms"], float)
    assert search["request_id"] == searched.headers["x-request-id"]
    last = access[-1]
    assert last["path"] == "/fhir/Task/x\\nFAKE LINE"  # escaped, still one line
    assert last["request_id"] == forged.headers["x-request-id"] != "bad id;"
    text_logged = json_log.getvalue()
    for secret in {*secrets, family}:
        assert secret not in text_logged, secret
