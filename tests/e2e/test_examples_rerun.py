"""The examples can be run any number of times against one server (issue #17).

Every entry of every example is conditional (`ifNoneExist` on an identifier, or matched by
identifier in PAS `Claim/$submit`), so the PAS example, the request examples (what `demo --url`
sends) and the PAS example again, three rounds in all, end with the same decisions, no error and
one resource per identifier.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from fhir_adapter.codes import PAS_REVIEW_ACTION

EXAMPLES = Path(__file__).parents[2] / "examples"
REQUESTS = sorted((EXAMPLES / "requests").glob("*.json"))
PAS = sorted((EXAMPLES / "pas").glob("*.json"))
TYPES = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Coverage",
    "Condition",
    "ServiceRequest",
    "Claim",
)


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _review_action(claim_response: dict[str, Any]) -> str:
    ext = next(
        e
        for e in claim_response["item"][0]["adjudication"][0]["extension"]
        if e["url"] == PAS_REVIEW_ACTION
    )
    code: str = ext["extension"][0]["valueCodeableConcept"]["coding"][0]["code"]
    return code


async def _decision_of(client: httpx.AsyncClient, answer: dict[str, Any]) -> str:
    task_key = next(
        e["response"]["location"].split("/_history")[0]
        for e in answer["entry"]
        if e["response"]["location"].startswith("Task/")
    )
    task = (await client.get(f"/{task_key}")).json()
    outputs = [o["valueReference"]["reference"] for o in task.get("output", [])]
    return _review_action((await client.get(f"/{outputs[-1]}")).json())


async def _all(client: httpx.AsyncClient, resource_type: str) -> list[dict[str, Any]]:
    found = (await client.get(f"/{resource_type}", params={"_count": "500"})).json()
    return [e["resource"] for e in found.get("entry", [])]


def test_every_example_entry_is_conditional() -> None:
    """Request entries carry ifNoneExist on an identifier; PAS entries carry the identifier the
    server matches them by (Task and ServiceRequest resubmission is the server's own check)."""
    for path in REQUESTS:
        for index, entry in enumerate(_load(path)["entry"]):
            condition = entry["request"].get("ifNoneExist", "")
            assert condition.startswith("identifier="), f"{path.name} entry {index}"
            system, value = condition.removeprefix("identifier=").split("|", 1)
            assert {"system": system, "value": value} in [
                {"system": i["system"], "value": i["value"]}
                for i in entry["resource"]["identifier"]
            ], f"{path.name} entry {index}"
    for path in PAS:
        for index, entry in enumerate(_load(path)["entry"]):
            identifiers = entry["resource"].get("identifier")
            first = identifiers[0] if isinstance(identifiers, list) else identifiers
            assert first and first.get("system") and first.get("value"), f"{path.name} {index}"


async def test_examples_run_three_times_against_one_server_change_nothing(
    client: httpx.AsyncClient,
) -> None:
    decisions: list[dict[str, str]] = []
    for _ in range(3):
        this_round: dict[str, str] = {}
        for path in PAS:
            answer = await client.post("/Claim/$submit", json=_load(path))
            assert answer.status_code == 200, f"{path.name}: {answer.text}"
            this_round[f"pas/{path.name}"] = _review_action(answer.json()["entry"][0]["resource"])
        for path in REQUESTS:
            answer = await client.post("", json=_load(path))
            assert answer.status_code == 200, f"{path.name}: {answer.text}"
            this_round[path.name] = await _decision_of(client, answer.json())
        decisions.append(this_round)
    assert decisions[0] == decisions[1] == decisions[2]
    assert decisions[0]["denied.json"] == "A3" and decisions[0]["in-network-pcp-care.json"] == "NA"
    for resource_type in TYPES:
        resources = await _all(client, resource_type)
        keys = Counter(
            (i["system"], i["value"]) for r in resources for i in r.get("identifier", [])[:1]
        )
        duplicated = {k: n for k, n in keys.items() if n > 1}
        assert not duplicated, f"{resource_type}: {duplicated}"
        assert len(keys) == len(resources), f"{resource_type} without an identifier"
    tasks = await _all(client, "Task")
    assert len(tasks) == len({t["focus"]["reference"] for t in tasks})
