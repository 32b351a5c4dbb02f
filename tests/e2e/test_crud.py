"""Create, read, update, vread, history and search through the API, on both backends."""

from __future__ import annotations

import httpx


def patient(family: str = "Rivera", **extra: object) -> dict[str, object]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:member", "value": f"M-{family}"}],
        "name": [{"family": family, "given": ["Ana"]}],
        **extra,
    }


async def test_create_assigns_id_version_and_headers(client: httpx.AsyncClient) -> None:
    response = await client.post("/Patient", json=patient())
    assert response.status_code == 201
    body = response.json()
    assert body["meta"]["versionId"] == "1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"] == f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert "last-modified" in response.headers


async def test_update_keeps_every_version(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json=patient())).json()
    pid = created["id"]
    updated = await client.put(f"/Patient/{pid}", json={**patient("Reyes"), "id": pid})
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2"
    v1 = await client.get(f"/Patient/{pid}/_history/1")
    assert v1.json()["name"][0]["family"] == "Rivera"
    current = await client.get(f"/Patient/{pid}")
    assert current.json()["name"][0]["family"] == "Reyes"
    history = (await client.get(f"/Patient/{pid}/_history")).json()
    assert history["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
