"""Each example request Bundle, submitted over HTTP, ends where contract §4 says it should."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_adapter.codes import PAS_AUTHORIZED_PROVIDER, PAS_REVIEW_ACTION, STATUS_SYSTEM

EXAMPLES = Path(__file__).parents[2] / "examples" / "requests"
DIRECTORY = "http://directory.test/directory/fhir"


def load(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


async def submit(client: httpx.AsyncClient, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Submit an example; return the decided Task and its ClaimResponse."""
    response = await client.post("", json=load(name))
    assert response.status_code == 200, response.text
    task_entry = next(
        e for e in response.json()["entry"] if e["resource"]["resourceType"] == "Task"
    )
    task = (await client.get(task_entry["response"]["location"].rsplit("/_history", 1)[0])).json()
    outputs = [o["valueReference"]["reference"] for o in task.get("output", [])]
    assert len(outputs) == 1, task
    claim_response = (await client.get(outputs[0])).json()
    return task, claim_response


def business_status(task: dict[str, Any]) -> str:
    return next(c["code"] for c in task["businessStatus"]["coding"] if c["system"] == STATUS_SYSTEM)


def review_action(claim_response: dict[str, Any]) -> str:
    action = next(
        e
        for e in claim_response["item"][0]["adjudication"][0]["extension"]
        if e["url"] == PAS_REVIEW_ACTION
    )
    return action["extension"][0]["valueCodeableConcept"]["coding"][0]["code"]


def providers(claim_response: dict[str, Any]) -> list[str]:
    return [
        e["extension"][0]["valueReference"]["reference"].removeprefix(DIRECTORY + "/")
        for e in claim_response["item"][0].get("extension", [])
        if e["url"] == PAS_AUTHORIZED_PROVIDER
    ]


@pytest.mark.parametrize(
    ("example", "status", "business", "action", "offered", "due"),
    [
        ("in-network-pcp-care", "accepted", "approved-in-network", "NA",
         ["PractitionerRole/brooks-role", "PractitionerRole/chen-role"], "2026-12-02T18:00:00.000Z"),
        # Garcia first: the PCP's own medical group ranks first (issue #10).
        ("in-network-specialist-care", "accepted", "approved-in-network", "NA",
         ["PractitionerRole/garcia-role", "PractitionerRole/patel-role"], "2026-12-02T18:00:00.000Z"),
        ("member-selected-provider", "accepted", "approved-in-network", "NA",
         ["PractitionerRole/garcia-role"], "2026-12-02T18:00:00.000Z"),
        ("out-of-network", "accepted", "approved-out-of-network", "A1",
         ["PractitionerRole/lindqvist-role"], "2026-12-02T18:00:00.000Z"),
        ("denied", "rejected", "denied", "A3", [], "2026-12-02T18:00:00.000Z"),
        ("review", "on-hold", "pending-review", "A4", [], "2026-12-02T18:00:00.000Z"),
        ("expedited", "accepted", "approved-in-network", "NA",
         ["PractitionerRole/kim-role"], "2026-11-28T18:00:00.000Z"),
    ],
)  # fmt: skip
async def test_example_path(
    client: httpx.AsyncClient,
    example: str,
    status: str,
    business: str,
    action: str,
    offered: list[str],
    due: str,
) -> None:
    task, claim_response = await submit(client, example)
    assert task["status"] == status
    assert business_status(task) == business
    assert task["restriction"]["period"]["end"] == due
    assert review_action(claim_response) == action
    assert providers(claim_response) == offered
    assert claim_response["use"] == "preauthorization"
    claim = (await client.get(claim_response["request"]["reference"])).json()
    assert claim["use"] == "preauthorization"
    assert (
        claim["item"][0]["extension"][0]["valueReference"]["reference"]
        == task["focus"]["reference"]
    )
