"""FHIR operations: Da Vinci PAS `Claim/$submit` and the reviewer's `Task/{id}/$decide`."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.codes import PAS_REVIEW_ACTION, PAS_REVIEWER, STATUS_SYSTEM
from tests.conftest import count_rows
from tests.factories import unresolved_references

EXAMPLES = Path(__file__).parents[2] / "examples"


def load(path: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / path).read_text())


def review_action(claim_response: dict[str, Any]) -> str:
    ext = next(
        e
        for e in claim_response["item"][0]["adjudication"][0]["extension"]
        if e["url"] == PAS_REVIEW_ACTION
    )
    return ext["extension"][0]["valueCodeableConcept"]["coding"][0]["code"]


async def test_pas_submit_answers_with_the_claim_response_first(client: httpx.AsyncClient) -> None:
    request = load("pas/claim-submit-request.json")
    response = await client.post("/Claim/$submit", json=request)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "collection" and bundle["identifier"] and bundle["timestamp"]
    first = bundle["entry"][0]["resource"]
    assert first["resourceType"] == "ClaimResponse"
    assert review_action(first) == "NA"
    assert first["request"]["identifier"] == request["entry"][0]["resource"]["identifier"][0]
    # References point at the fullUrls the client sent, and those entries are echoed back.
    sent = {e["fullUrl"] for e in request["entry"]}
    assert first["patient"]["reference"] in sent
    echoed = {e["fullUrl"] for e in bundle["entry"][1:]}
    assert first["patient"]["reference"] in echoed
    assert first["request"]["reference"] in echoed


async def test_pas_response_bundle_holds_everything_the_claim_response_references(
    client: httpx.AsyncClient,
) -> None:
    """PAS spec-30: every resource the ClaimResponse references is in the response Bundle,
    the listed providers (directory PractitionerRoles) included."""
    response = await client.post("/Claim/$submit", json=load("pas/claim-submit-request.json"))
    assert response.status_code == 200, response.text
    bundle = response.json()
    claim_response = bundle["entry"][0]["resource"]
    assert claim_response["insurer"]["reference"] and claim_response["requestor"]["reference"]
    assert unresolved_references(bundle) == []
    full_urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(full_urls) == len(set(full_urls))  # PAS spec-14: each instance once
    kinds = {e["resource"]["resourceType"] for e in bundle["entry"][1:]}
    assert {"Patient", "Organization", "PractitionerRole", "Claim"} <= kinds


async def test_pas_resubmission_is_one_request(client: httpx.AsyncClient) -> None:
    request = load("pas/claim-submit-request.json")
    first = (await client.post("/Claim/$submit", json=request)).json()
    again = (await client.post("/Claim/$submit", json=request)).json()
    assert first["entry"][0]["fullUrl"] == again["entry"][0]["fullUrl"]
    for kind in ("ServiceRequest", "Claim", "ClaimResponse", "Patient"):
        assert (await client.get(f"/{kind}", params={"_summary": "count"})).json()["total"] == 1, (
            kind
        )


@pytest.mark.parametrize(
    ("mutate", "status", "expression"),
    [
        (lambda b: b.update(type="transaction"), 422, "Bundle.type"),
        (lambda b: b["entry"].reverse(), 422, "Bundle.entry[0].resource"),
        (
            lambda b: b["entry"][0]["resource"].update(use="claim"),
            422,
            "Bundle.entry[0].resource.use",
        ),
        (
            lambda b: b["entry"][0]["resource"]["item"][0].pop("extension"),
            422,
            "Bundle.entry[0].resource.item",
        ),
        (lambda b: b["entry"][0].pop("fullUrl"), 422, "Bundle.entry[0]"),
        (
            lambda b: b["entry"][0]["resource"].update(status="nonsense"),
            400,
            "Bundle.entry[0].resource.status",
        ),
    ],
    ids=[
        "not-a-collection",
        "claim-not-first",
        "not-preauthorization",
        "no-requested-service",
        "no-fullurl",
        "bad-code",
    ],
)
async def test_non_conformant_pas_bundles_are_refused(
    client: httpx.AsyncClient, engine: AsyncEngine, mutate: Any, status: int, expression: str
) -> None:
    bundle = copy.deepcopy(load("pas/claim-submit-request.json"))
    mutate(bundle)
    before = await count_rows(engine)
    response = await client.post("/Claim/$submit", json=bundle)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert expression in [e for i in outcome["issue"] for e in i.get("expression", [])]
    assert await count_rows(engine) == before


def decide_params(decision: str, **extra: Any) -> dict[str, Any]:
    parameters = [
        {"name": "decision", "valueCode": decision},
        {
            "name": "reviewer",
            "valueReference": {
                "reference": "https://directory.example/fhir/Practitioner/reviewer-1"
            },
        },
        {"name": "reviewerNPI", "valueString": "1972819302"},
        {
            "name": "reviewerSpecialty",
            "valueCodeableConcept": {
                "coding": [{"system": "http://nucc.org/provider-taxonomy", "code": "207X00000X"}]
            },
        },
    ]
    for name, value in extra.items():
        for item in value if isinstance(value, list) else [value]:
            parameters.append({"name": name, **item})
    return {"resourceType": "Parameters", "parameter": parameters}


async def pended_task(client: httpx.AsyncClient) -> dict[str, Any]:
    answer = (await client.post("", json=load("requests/review.json"))).json()
    location = next(
        e["response"]["location"]
        for e in answer["entry"]
        if e["response"]["location"].startswith("Task/")
    )
    return (await client.get(location.split("/_history")[0])).json()


async def test_reviewer_approves_a_pended_request(client: httpx.AsyncClient) -> None:
    task = await pended_task(client)
    assert task["status"] == "on-hold"
    provider = {
        "valueReference": {
            "reference": "http://directory.test/directory/fhir/PractitionerRole/patel-role"
        }
    }
    response = await client.post(
        f"/Task/{task['id']}/$decide", json=decide_params("approved-in-network", provider=provider)
    )
    assert response.status_code == 200, response.text
    claim_response = response.json()
    assert review_action(claim_response) == "NA"
    reviewer = next(e for e in claim_response["extension"] if e["url"] == PAS_REVIEWER)
    assert {"url": "wasHumanReviewedFlag", "valueBoolean": True} in reviewer["extension"]
    decided = (await client.get(f"/Task/{task['id']}")).json()
    assert decided["status"] == "accepted"
    assert [
        c["code"] for c in decided["businessStatus"]["coding"] if c["system"] == STATUS_SYSTEM
    ] == ["approved-in-network"]
    assert (
        decided["output"][0]["valueReference"]["reference"]
        == f"ClaimResponse/{claim_response['id']}"
    )


async def test_reviewer_denial_records_reason_and_specialty(client: httpx.AsyncClient) -> None:
    task = await pended_task(client)
    reason = {"valueString": "The request duplicates an opinion given last month."}
    response = await client.post(
        f"/Task/{task['id']}/$decide", json=decide_params("denied", reason=reason)
    )
    assert response.status_code == 200, response.text
    claim_response = response.json()
    assert review_action(claim_response) == "A3"
    assert any("duplicates an opinion" in n["text"] for n in claim_response["processNote"])
    reviewer = next(e for e in claim_response["extension"] if e["url"] == PAS_REVIEWER)
    assert any(e["url"] == "reviewerSpecialty" for e in reviewer["extension"])
    assert (await client.get(f"/Task/{task['id']}")).json()["status"] == "rejected"
    # Decided requests cannot be decided again.
    again = await client.post(
        f"/Task/{task['id']}/$decide", json=decide_params("denied", reason=reason)
    )
    assert again.status_code == 409
    assert again.json()["issue"][0]["expression"] == ["Task.status"]


@pytest.mark.parametrize(
    ("params", "where"),
    [
        (decide_params("maybe"), "decision"),
        (decide_params("approved-in-network"), "provider"),
        (decide_params("denied"), "reason"),
        (
            {
                "resourceType": "Parameters",
                "parameter": [{"name": "decision", "valueCode": "denied"}],
            },
            "reviewer",
        ),
    ],
    ids=["unknown-decision", "approval-without-provider", "denial-without-reason", "no-reviewer"],
)
async def test_incomplete_reviewer_decisions_are_422(
    client: httpx.AsyncClient, params: dict[str, Any], where: str
) -> None:
    task = await pended_task(client)
    response = await client.post(f"/Task/{task['id']}/$decide", json=params)
    assert response.status_code == 422, response.text
    assert any(where in e for i in response.json()["issue"] for e in i.get("expression", []))
    assert (await client.get(f"/Task/{task['id']}")).json()["status"] == "on-hold"


async def test_deciding_an_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/Task/nope/$decide", json=decide_params("denied", reason={"valueString": "x"})
    )
    assert response.status_code == 404


async def test_pas_resubmission_matches_identifiers_with_search_syntax_characters_exactly(
    client: httpx.AsyncClient,
) -> None:
    """`,`, `&`, `$` and `=` in an identifier are data, not search syntax: the conditional create
    built from it matches that identifier only (a resubmission), never a different one."""
    first = copy.deepcopy(load("pas/claim-submit-request.json"))
    second = copy.deepcopy(first)
    for bundle, value in ((first, "A,1&x=$2"), (second, "A")):
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] == "Patient":
                entry["resource"]["identifier"][0]["value"] = value
    # Another member's request: its own Claim, Coverage and request identifiers too (issue #16:
    # reusing the first member's would be a conflict, never a link across patients).
    for entry in second["entry"]:
        if entry["resource"]["resourceType"] not in (
            "Patient",
            "Practitioner",
            "PractitionerRole",
            "Organization",
        ):
            for identifier in entry["resource"].get("identifier", []):
                identifier["value"] += "-other-member"
    assert (await client.post("/Claim/$submit", json=first)).status_code == 200
    assert (await client.post("/Claim/$submit", json=second)).status_code == 200
    assert (await client.post("/Claim/$submit", json=first)).status_code == 200  # resubmitted
    patients = (await client.get("/Patient", params={"_count": "100"})).json()["entry"]
    values = sorted(
        i["value"] for e in patients for i in e["resource"].get("identifier", []) if "value" in i
    )
    assert values.count("A,1&x=$2") == 1 and values.count("A") == 1, values
