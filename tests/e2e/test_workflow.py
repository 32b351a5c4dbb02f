"""The workflow around the example paths: outages, deadlines, resubmission, separate POSTs, bad requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.api.app import create_app
from fhir_adapter.bootstrap import Container, build_container
from fhir_adapter.codes import PAS_REVIEW_ACTION, STATUS_SYSTEM
from fhir_adapter.config import Settings
from fhir_adapter.directory.client import DirectoryClient
from fhir_adapter.store.sql import SqlResourceStore
from tests.conftest import BASE_URL, DIRECTORY_BASE, count_rows
from tests.factories import example_request
from tests.fakes import FrozenClock, SwitchableTransport
from tests.tokens import bearer

EXAMPLES = Path(__file__).parents[2] / "examples" / "requests"


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def business_status(task: dict[str, Any]) -> str:
    return next(c["code"] for c in task["businessStatus"]["coding"] if c["system"] == STATUS_SYSTEM)


def review_action(claim_response: dict[str, Any]) -> str:
    ext = next(
        e
        for e in claim_response["item"][0]["adjudication"][0]["extension"]
        if e["url"] == PAS_REVIEW_ACTION
    )
    return ext["extension"][0]["valueCodeableConcept"]["coding"][0]["code"]


async def tasks(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    bundle = (
        await client.get(
            "/Task",
            params={"code": "http://hl7.org/fhir/CodeSystem/task-code|fulfill", "_count": "500"},
        )
    ).json()
    return [e["resource"] for e in bundle.get("entry", [])]


async def decision_of(client: httpx.AsyncClient, task: dict[str, Any]) -> dict[str, Any]:
    return (await client.get(task["output"][0]["valueReference"]["reference"])).json()


@pytest.fixture
def flaky(directory_app: FastAPI) -> SwitchableTransport:
    return SwitchableTransport(httpx.ASGITransport(app=directory_app))


@pytest.fixture
async def flaky_container(
    settings: Settings, engine: AsyncEngine, flaky: SwitchableTransport, clock: FrozenClock
) -> AsyncIterator[Container]:
    async with httpx.AsyncClient(transport=flaky, base_url="http://directory.test") as http:
        directory = DirectoryClient(
            http,
            DIRECTORY_BASE,
            network="Organization/medi-cal-network",
            backoff_seconds=0.001,
            cache_seconds=0,
        )
        store = SqlResourceStore(engine, base_url=settings.fhir_base_url)
        yield await build_container(settings, store=store, directory=directory, clock=clock)


@pytest.fixture
async def flaky_client(flaky_container: Container) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(container=flaky_container))
    async with httpx.AsyncClient(
        transport=transport, base_url=BASE_URL, headers=bearer(flaky_container)
    ) as client:
        yield client


async def test_directory_outage_pends_then_decides_every_request(
    flaky_client: httpx.AsyncClient,
    flaky_container: Container,
    flaky: SwitchableTransport,
    clock: FrozenClock,
) -> None:
    flaky.down = True
    names = ["in-network-specialist-care", "out-of-network", "denied", "expedited"]
    for i, name in enumerate(names * 2):
        response = await flaky_client.post("", json=example_request(name, f"-{i}"))
        assert response.status_code == 200, response.text
    submitted = await tasks(flaky_client)
    assert len(submitted) == 8
    # A requester who is neither the member, the PCP nor the initial provider is denied from the
    # request alone; everything that needs the directory waits for it.
    pended = [t for t in submitted if t["status"] != "rejected"]
    assert len(pended) == 6
    for task in pended:
        assert task["status"] == "on-hold"
        assert business_status(task) == "pending-directory"
        assert review_action(await decision_of(flaky_client, task)) == "A4"
    # Still down: the retries keep them pended, never denied.
    clock.advance(minutes=5)
    assert await flaky_container.workflow.run_due_jobs() == 6
    assert {business_status(t) for t in await tasks(flaky_client) if t["status"] != "rejected"} == {
        "pending-directory"
    }
    # The directory comes back: the next retry decides every one of them.
    flaky.down = False
    clock.advance(minutes=30)
    decided = 0
    while await flaky_container.workflow.run_due_jobs():
        decided += 1
    final = await tasks(flaky_client)
    assert len(final) == 8
    outcomes = sorted(business_status(t) for t in final)
    assert outcomes == sorted(
        ["approved-in-network", "approved-out-of-network", "denied", "approved-in-network"] * 2
    )
    for task in final:
        claim_response = await decision_of(flaky_client, task)
        assert review_action(claim_response) in {"NA", "A1", "A3"}
        assert len(task["output"]) == 1  # the same ClaimResponse, updated, not a second one
    responses = (await flaky_client.get("/ClaimResponse", params={"_summary": "count"})).json()
    assert responses["total"] == 8


async def test_undecided_request_past_its_deadline_is_denied(
    client: httpx.AsyncClient, container: Container, clock: FrozenClock
) -> None:
    await client.post("", json=example("review"))
    [task] = await tasks(client)
    assert business_status(task) == "pending-review"
    clock.advance(days=6)  # before the due date (7 calendar days): nothing happens
    assert await container.workflow.expire_overdue() == 0
    clock.advance(days=1, seconds=1)
    assert await container.workflow.expire_overdue() == 1
    [task] = await tasks(client)
    assert task["status"] == "rejected"
    assert business_status(task) == "denied"
    claim_response = await decision_of(client, task)
    assert review_action(claim_response) == "A3"
    reason = next(
        e
        for e in claim_response["item"][0]["adjudication"][0]["extension"][0]["extension"]
        if e["url"] == "reasonCode"
    )
    assert reason["valueCodeableConcept"]["coding"][0]["code"] == "deadline-expired"
    assert await container.workflow.expire_overdue() == 0  # once only


async def test_resubmission_never_creates_a_second_request(client: httpx.AsyncClient) -> None:
    bundle = example("in-network-specialist-care")
    first = await client.post("", json=bundle)
    again = await client.post("", json=bundle)
    assert first.status_code == again.status_code == 200
    statuses = [e["response"]["status"] for e in again.json()["entry"]]
    assert set(statuses) <= {"200 OK", "201 Created"}
    assert len(await tasks(client)) == 1
    requests = (await client.get("/ServiceRequest", params={"_summary": "count"})).json()
    assert requests["total"] == 1
    claims = (await client.get("/ClaimResponse", params={"_summary": "count"})).json()
    assert claims["total"] == 1


async def test_resubmission_without_conditions_is_still_one_request(
    client: httpx.AsyncClient,
) -> None:
    """The contract's idempotency holds even when the EHR sends no ifNoneExist."""
    bundle = example("member-selected-provider")
    for entry in bundle["entry"]:
        entry["request"].pop("ifNoneExist", None)
        if entry["resource"]["resourceType"] == "Task":
            entry["resource"].pop("identifier")
    await client.post("", json=bundle)
    await client.post("", json=bundle)
    assert len(await tasks(client)) == 1


async def test_separate_posts_of_request_and_task(client: httpx.AsyncClient) -> None:
    """Contract §3: POST ServiceRequest then POST Task works like the transaction."""
    bundle = example("in-network-specialist-care")
    entries = bundle["entry"]
    sr_entry = next(e for e in entries if e["resource"]["resourceType"] == "ServiceRequest")
    task_entry = next(e for e in entries if e["resource"]["resourceType"] == "Task")
    others = [e for e in entries if e not in (sr_entry, task_entry)]
    setup = await client.post(
        "", json={"resourceType": "Bundle", "type": "transaction", "entry": others}
    )
    assert setup.status_code == 200, setup.text
    ids = {
        sent["fullUrl"]: answer["response"]["location"].split("/_history")[0]
        for sent, answer in zip(others, setup.json()["entry"], strict=True)
    }

    def local(value: Any) -> Any:
        text = json.dumps(value)
        for urn, key in ids.items():
            text = text.replace(urn, key)
        return json.loads(text)

    request = await client.post("/ServiceRequest", json=local(sr_entry["resource"]))
    assert request.status_code == 201, request.text
    ids[sr_entry["fullUrl"]] = f"ServiceRequest/{request.json()['id']}"
    created = await client.post("/Task", json=local(task_entry["resource"]))
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "received"
    task = (await client.get(f"/Task/{created.json()['id']}")).json()
    assert task["status"] == "accepted"
    assert business_status(task) == "approved-in-network"


@pytest.mark.parametrize(
    ("mutate", "expression"),
    [
        (lambda sr, task: sr.pop("reasonCode"), "resource.reasonCode"),
        (
            lambda sr, task: sr["reasonCode"][0]["coding"][0].update(code="vibes"),
            "resource.reasonCode[0].coding[0].code",
        ),
        (lambda sr, task: sr.pop("extension"), "initial-opinion-provider"),
        (
            lambda sr, task: sr.update(requester={"reference": sr["insurance"][0]["reference"]}),
            "resource.requester",
        ),
        (
            lambda sr, task: task.update(focus={"reference": task["for"]["reference"]}),
            "resource.focus",
        ),
        (lambda sr, task: sr.pop("insurance"), "resource.insurance"),
        (lambda sr, task: task.pop("code"), "resource.code"),
        (
            lambda sr, task: sr["extension"][0].update(valueReference=sr["subject"]),
            "initial-opinion-provider",
        ),
    ],
    ids=[
        "no-reason",
        "unknown-reason-code",
        "no-initial-provider",
        "requester-is-coverage",
        "task-focus-not-request",
        "no-insurance",
        "task-without-fulfill-code",
        "initial-provider-not-a-role",
    ],
)
async def test_bad_requests_are_422_and_store_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine, mutate: Any, expression: str
) -> None:
    bundle = example("in-network-specialist-care")
    sr = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"
    )
    task = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task")
    mutate(sr, task)
    before = await count_rows(engine)
    response = await client.post("", json=bundle)
    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(expression in e for i in outcome["issue"] for e in i.get("expression", [])), outcome
    assert all(
        e.startswith("Bundle.entry[") for i in outcome["issue"] for e in i.get("expression", [])
    )
    assert await count_rows(engine) == before


def _drop_member_id_type(resources: dict[str, Any]) -> None:
    for identifier in resources["Patient"]["identifier"]:
        identifier.pop("type", None)


@pytest.mark.parametrize(
    ("mutate", "status", "expression"),
    [
        (lambda r: r["ServiceRequest"].pop("category"), 422, "ServiceRequest:category"),
        (lambda r: r["ServiceRequest"].update(category=[]), 400, "ServiceRequest:category"),
        (lambda r: r["Patient"].pop("generalPractitioner"), 422, "Patient:generalPractitioner"),
        (_drop_member_id_type, 422, "Patient:identifier"),
        (lambda r: r["Coverage"].pop("period"), 422, "Coverage:period"),
    ],
    ids=[
        "request-without-category",
        "empty-category",
        "member-without-pcp",
        "member-without-member-id",
        "coverage-without-period",
    ],
)
async def test_required_content_of_contract_3_is_checked_before_anything_is_stored(
    client: httpx.AsyncClient, engine: AsyncEngine, mutate: Any, status: int, expression: str
) -> None:
    """A gap the EHR can fix is a 4xx naming the element, never a stored request that is never
    decided (no category) nor a denial sent to the member (no PCP, no member id, no period)."""
    bundle = example("in-network-specialist-care")
    by_type = {e["resource"]["resourceType"]: e for e in bundle["entry"]}
    mutate({kind: e["resource"] for kind, e in by_type.items()})
    before = await count_rows(engine)
    response = await client.post("", json=bundle)
    assert response.status_code == status, response.text
    kind, element = expression.split(":")
    at = f"Bundle.entry[{bundle['entry'].index(by_type[kind])}].resource.{element}"
    found = [e for i in response.json()["issue"] for e in i.get("expression", [])]
    assert at in found, response.text
    assert await count_rows(engine) == before


async def test_a_stored_member_without_a_pcp_is_named_through_the_request(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Separate POSTs: the Patient was stored earlier, so the request's `subject` is at fault."""
    bundle = example("in-network-specialist-care")
    entries = bundle["entry"]
    patient_entry = next(e for e in entries if e["resource"]["resourceType"] == "Patient")
    patient_entry["resource"].pop("generalPractitioner")
    kept = [e for e in entries if e["resource"]["resourceType"] not in ("ServiceRequest", "Task")]
    setup = await client.post("", json={**bundle, "entry": kept})
    assert setup.status_code == 200, setup.text
    text = json.dumps(next(e for e in entries if e["resource"]["resourceType"] == "ServiceRequest"))
    for sent, answer in zip(kept, setup.json()["entry"], strict=True):
        text = text.replace(sent["fullUrl"], answer["response"]["location"].split("/_history")[0])
    before = await count_rows(engine)
    response = await client.post("/ServiceRequest", json=json.loads(text)["resource"])
    assert response.status_code == 422, response.text
    issues = response.json()["issue"]
    assert [e for i in issues for e in i["expression"]] == ["ServiceRequest.subject"], issues
    assert "generalPractitioner" in issues[0]["diagnostics"]
    assert await count_rows(engine) == before


async def test_a_slow_directory_never_holds_the_submitter_past_the_answer_time(
    settings: Settings,
    engine: AsyncEngine,
    flaky: SwitchableTransport,
    clock: FrozenClock,
) -> None:
    """PAS spec-7: answer within about 15 s. The request is stored and received; the worker decides."""
    settings = settings.model_copy(update={"answer_within_seconds": 0.3})
    async with httpx.AsyncClient(transport=flaky, base_url="http://directory.test") as http:
        directory = DirectoryClient(
            http,
            DIRECTORY_BASE,
            network="Organization/medi-cal-network",
            backoff_seconds=0.001,
            cache_seconds=0,
        )
        store = SqlResourceStore(engine, base_url=settings.fhir_base_url)
        container = await build_container(settings, store=store, directory=directory, clock=clock)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(container=container)),
            base_url=BASE_URL,
            headers=bearer(container),
        ) as client:
            flaky.delay = 2.0
            started = asyncio.get_running_loop().time()
            response = await client.post(
                "", json=example_request("in-network-specialist-care", "-slow")
            )
            assert response.status_code == 200
            assert asyncio.get_running_loop().time() - started < 1.5
            [task] = await tasks(client)
            assert task["status"] == "received"  # stored and on the clock, not yet decided
            flaky.delay = 0.0
            # the worker leaves the request to its own process for the answer time, then takes it
            assert await container.workflow.run_due_jobs() == 0
            clock.advance(seconds=settings.answer_within_seconds)
            assert await container.workflow.run_due_jobs() == 1
            [task] = await tasks(client)
            assert task["status"] == "accepted"
