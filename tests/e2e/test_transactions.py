"""Transaction and batch Bundles in process, on both backends."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import count_rows


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def post(full_url: str, resource: dict, if_none_exist: str | None = None) -> dict:
    request = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    return {"fullUrl": full_url, "resource": resource, "request": request}


def transaction(*entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


async def test_transaction_conditional_create_reuses_the_match(client: httpx.AsyncClient) -> None:
    member = {"resourceType": "Patient", "identifier": [{"system": "urn:member", "value": "M-77"}]}
    first = await client.post("/Patient", json=member)
    patient_urn = urn()
    bundle = transaction(
        post(patient_urn, member, if_none_exist="identifier=urn:member|M-77"),
        post(urn(), {"resourceType": "Condition", "subject": {"reference": patient_urn}}),
    )
    response = await client.post("", json=bundle)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK"
    assert entries[0]["resource"]["id"] == first.json()["id"]
    assert entries[1]["response"]["status"] == "201 Created"
    assert entries[1]["resource"]["subject"]["reference"] == f"Patient/{first.json()['id']}"
    total = (await client.get("/Patient", params={"identifier": "urn:member|M-77"})).json()["total"]
    assert total == 1


async def test_transaction_put_get_and_minimal_return(client: httpx.AsyncClient) -> None:
    org = (
        await client.post("/Organization", json={"resourceType": "Organization", "name": "Plan"})
    ).json()
    bundle = transaction(
        {
            "fullUrl": "http://testserver/fhir/Organization/" + org["id"],
            "resource": {**org, "name": "Plan Renamed"},
            "request": {"method": "PUT", "url": f"Organization/{org['id']}", "ifMatch": 'W/"1"'},
        },
        {
            "resource": {"resourceType": "Practitioner", "id": "dr-chen"},
            "request": {"method": "PUT", "url": "Practitioner/dr-chen"},
        },
        {"request": {"method": "GET", "url": f"Organization/{org['id']}"}},
        {"request": {"method": "GET", "url": "Practitioner?_id=dr-chen"}},
    )
    response = await client.post("", json=bundle, headers={"Prefer": "return=minimal"})
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK"
    assert entries[0]["response"]["etag"] == 'W/"2"'
    assert "resource" not in entries[0]
    assert entries[1]["response"]["status"] == "201 Created"
    assert entries[1]["response"]["location"] == "Practitioner/dr-chen/_history/1"
    # GET entries run after the writes (R4 processing order) and see them.
    assert entries[2]["resource"]["name"] == "Plan Renamed"
    assert entries[3]["resource"]["total"] == 1


async def test_failed_put_rolls_back_earlier_creates(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    org = (
        await client.post("/Organization", json={"resourceType": "Organization", "name": "A"})
    ).json()
    before = await count_rows(engine)
    bundle = transaction(
        post(urn(), {"resourceType": "Patient"}),
        {
            "resource": {**org, "name": "B"},
            "request": {"method": "PUT", "url": f"Organization/{org['id']}", "ifMatch": 'W/"9"'},
        },
    )
    response = await client.post("", json=bundle)
    assert response.status_code == 412
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert await count_rows(engine) == before
    assert (await client.get(f"/Organization/{org['id']}")).json()["name"] == "A"


async def test_batch_entries_succeed_and_fail_independently(client: httpx.AsyncClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": {"resourceType": "Patient"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {"resourceType": "Patient", "gender": "x"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": "Patient/nope"}},
        ],
    }
    response = await client.post("", json=bundle)
    assert response.status_code == 200
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[1]["response"]["status"] == "400"
    assert entries[1]["response"]["outcome"]["issue"][0]["expression"] == [
        "Bundle.entry[1].resource.gender"
    ]
    assert entries[2]["response"]["status"] == "404"


async def test_concurrent_conditional_creates_make_one_resource(client: httpx.AsyncClient) -> None:
    """Resubmitting the same request at once must not create it twice (advisory lock / serialized writers)."""
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:member", "value": "RACE-1"}]}
    headers = {"If-None-Exist": "identifier=urn:member|RACE-1"}
    responses = await asyncio.gather(
        *(client.post("/Patient", json=body, headers=headers) for _ in range(8))
    )
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in responses}) == 1


async def test_concurrent_version_aware_updates_one_wins(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json={"resourceType": "Patient"})).json()
    pid = created["id"]

    async def update(gender: str) -> httpx.Response:
        body = {"resourceType": "Patient", "id": pid, "gender": gender}
        return await client.put(f"/Patient/{pid}", json=body, headers={"If-Match": 'W/"1"'})

    responses = await asyncio.gather(update("female"), update("male"), update("other"))
    assert sorted(r.status_code for r in responses) == [200, 412, 412]
    history = (await client.get(f"/Patient/{pid}/_history")).json()
    assert history["total"] == 2
