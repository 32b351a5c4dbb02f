"""Issue #5: a Provenance for every decision (by the plan's rules or by a reviewer) and for every
delivery, naming the exact versions it is about; and the builders emit valid R4 Provenance."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from fhir_adapter.bootstrap import Container
from fhir_adapter.fhir.validation import validate_resource
from fhir_adapter.workflow.provenance import decision_provenance, delivery_provenance
from tests.e2e import test_reports
from tests.e2e.test_operations import decide_params, pended_task
from tests.e2e.test_reports import approved_request, report
from tests.factories import example_request
from tests.worker import render_notices

# The delivery fixtures of the report tests: a container whose deliverer reaches a fake EHR.
receiver = test_reports.receiver
ehr_transport = test_reports.ehr_transport
loop_container = test_reports.loop_container
api = test_reports.api


async def provenance_for(client: httpx.AsyncClient, target: str) -> list[dict[str, Any]]:
    found = (await client.get("/Provenance", params={"target": target})).json()
    return [e["resource"] for e in found.get("entry", [])]


def test_builders_emit_valid_provenance() -> None:
    now = datetime(2026, 11, 25, 18, tzinfo=UTC)
    validate_resource(
        decision_provenance(
            targets=["ClaimResponse/a/_history/1", "Task/b/_history/2"],
            request="ServiceRequest/c",
            plan="Organization/demo-plan",
            recorded=now,
            created=True,
            reviewer="Practitioner/r",
        )
    )
    validate_resource(
        delivery_provenance(
            communication="Communication/d/_history/2",
            plan="Organization/demo-plan",
            recorded=now,
            delivered=False,
        )
    )


async def test_a_rules_decision_has_provenance_for_its_versions(client: httpx.AsyncClient) -> None:
    answer = (await client.post("", json=example_request("denied", "-prov"))).json()
    task_key = next(
        e["response"]["location"].split("/_history")[0]
        for e in answer["entry"]
        if e["response"]["location"].startswith("Task/")
    )
    task = (await client.get(f"/{task_key}")).json()
    claim_response_key = task["output"][0]["valueReference"]["reference"]
    claim_response = (await client.get(f"/{claim_response_key}")).json()
    [provenance] = await provenance_for(client, claim_response_key)
    targets = {t["reference"] for t in provenance["target"]}
    assert f"{claim_response_key}/_history/{claim_response['meta']['versionId']}" in targets
    assert f"{task_key}/_history/{task['meta']['versionId']}" in targets
    assert provenance["agent"][0]["who"]["reference"] == "Organization/demo-plan"
    assert provenance["agent"][0]["type"]["coding"][0]["code"] == "author"
    assert provenance["entity"][0]["what"]["reference"].startswith("ServiceRequest/")
    assert provenance["activity"]["coding"][0]["code"] == "CREATE"


async def test_a_reviewer_decision_names_the_reviewer(client: httpx.AsyncClient) -> None:
    task = await pended_task(client)
    response = await client.post(
        f"/Task/{task['id']}/$decide",
        json=decide_params("denied", reason={"valueString": "Not a second-opinion case."}),
    )
    assert response.status_code == 200, response.text
    claim_response = response.json()
    key = f"ClaimResponse/{claim_response['id']}"
    records = await provenance_for(client, key)
    assert len(records) == 2  # the pended decision (A4), then the reviewer's
    latest = next(
        p
        for p in records
        if f"{key}/_history/{claim_response['meta']['versionId']}"
        in {t["reference"] for t in p["target"]}
    )
    verifier = latest["agent"][0]
    assert verifier["type"]["coding"][0]["code"] == "verifier"
    assert verifier["who"]["reference"] == "https://directory.example/fhir/Practitioner/reviewer-1"
    assert verifier["onBehalfOf"]["reference"] == "Organization/demo-plan"
    assert latest["activity"]["coding"][0]["code"] == "UPDATE"


async def test_every_delivery_has_provenance(
    api: httpx.AsyncClient, loop_container: Container
) -> None:
    keys = await approved_request(api, "-prov-delivery")
    await render_notices(loop_container)
    assert (
        await api.post("/DiagnosticReport", json=report(keys["ServiceRequest"], keys["Patient"]))
    ).status_code == 201
    assert await loop_container.delivery.run_due() == 2
    async with loop_container.store.transaction(write=False) as tx:
        delivered = await tx.outbox.items(state="delivered")
    assert len(delivered) == 2
    for item in delivered:
        communication = (await api.get(f"/Communication/{item.communication_id}")).json()
        [provenance] = await provenance_for(api, f"Communication/{item.communication_id}")
        assert provenance["target"] == [
            {
                "reference": f"Communication/{item.communication_id}/_history/"
                f"{communication['meta']['versionId']}"
            }
        ]
        assert provenance["activity"]["coding"][0]["code"] == "transmit"
        assert provenance["agent"][0]["type"]["coding"][0]["code"] == "performer"
        assert "reason" not in provenance
