"""Search through the API: parameters, includes, paging, on both backends."""

from __future__ import annotations

import httpx

from tests.fakes import FrozenClock


async def make(client: httpx.AsyncClient, resource: dict) -> dict:
    response = await client.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return response.json()


async def ids(client: httpx.AsyncClient, url: str, **params: str) -> set[str]:
    response = await client.get(url, params=params)
    assert response.status_code == 200, response.text
    return {
        e["resource"]["id"]
        for e in response.json().get("entry", [])
        if e["search"]["mode"] == "match"
    }


async def seed(client: httpx.AsyncClient) -> dict[str, dict]:
    patient = await make(client, {"resourceType": "Patient", "name": [{"family": "Núñez"}]})
    other = await make(client, {"resourceType": "Patient", "name": [{"family": "Smith"}]})
    request = await make(client, {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "subject": {"reference": f"Patient/{patient['id']}"},
    })  # fmt: skip
    base = {"resourceType": "Task", "intent": "order"}
    t1 = await make(
        client,
        {
            **base,
            "status": "requested",
            "for": {"reference": f"Patient/{patient['id']}"},
            "focus": {"reference": f"ServiceRequest/{request['id']}"},
            "authoredOn": "2026-11-25T10:00:00-08:00",
            "businessStatus": {"coding": [{"system": "urn:bs", "code": "pending-review"}]},
        },
    )
    t2 = await make(
        client,
        {
            **base,
            "status": "accepted",
            "for": {"reference": f"Patient/{other['id']}"},
            "authoredOn": "2026-11-20",
            "owner": {"reference": "https://directory.example/fhir/PractitionerRole/pr-1"},
        },
    )
    return {"patient": patient, "other": other, "request": request, "t1": t1, "t2": t2}


async def test_token_reference_and_date_parameters(client: httpx.AsyncClient) -> None:
    s = await seed(client)
    t1, t2 = s["t1"]["id"], s["t2"]["id"]
    assert await ids(client, "/Task", status="requested") == {t1}
    assert await ids(client, "/Task", status="requested,accepted") == {t1, t2}
    assert await ids(client, "/Task", **{"status:not": "requested"}) == {t2}
    assert await ids(client, "/Task", **{"business-status": "urn:bs|pending-review"}) == {t1}
    assert await ids(client, "/Task", patient=s["patient"]["id"]) == {t1}
    assert await ids(client, "/Task", patient=f"Patient/{s['other']['id']}") == {t2}
    assert await ids(
        client, "/Task", owner="https://directory.example/fhir/PractitionerRole/pr-1"
    ) == {t2}
    assert await ids(client, "/Task", **{"authored-on": "2026-11-25"}) == {t1}
    assert await ids(client, "/Task", **{"authored-on": "gt2026-11-21"}) == {t1}
    assert await ids(client, "/Task", **{"authored-on": "lt2026-11-21"}) == {t2}
    assert await ids(client, "/Task", _id=f"{t1},{t2}") == {t1, t2}


async def test_parameters_are_anded(client: httpx.AsyncClient) -> None:
    s = await seed(client)
    assert await ids(client, "/Task", status="accepted", patient=s["patient"]["id"]) == set()


async def test_string_search_ignores_case_and_accents(client: httpx.AsyncClient) -> None:
    s = await seed(client)
    assert await ids(client, "/Patient", family="nunez") == {s["patient"]["id"]}
    assert await ids(client, "/Patient", **{"family:exact": "Smi"}) == set()
    assert await ids(client, "/Patient", **{"name:contains": "mit"}) == {s["other"]["id"]}


async def test_include_adds_referenced_resources(client: httpx.AsyncClient) -> None:
    s = await seed(client)
    response = await client.get(
        "/Task",
        params=[("_id", s["t1"]["id"]), ("_include", "Task:focus"), ("_include", "Task:patient")],
    )
    bundle = response.json()
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"]}
    assert modes == {("Task", "match"), ("ServiceRequest", "include"), ("Patient", "include")}
    assert bundle["total"] == 1
    assert "_include=Task%3Afocus" in bundle["link"][0]["url"]


async def test_last_updated_and_summary_count(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    s = await seed(client)
    clock.advance(minutes=5)
    later = await make(client, {"resourceType": "Task", "status": "draft", "intent": "order"})
    stamp = later["meta"]["lastUpdated"]
    assert await ids(client, "/Task", _lastUpdated=f"ge{stamp}") == {later["id"]}
    assert await ids(client, "/Task", _lastUpdated=f"lt{stamp}") == {s["t1"]["id"], s["t2"]["id"]}
    counted = (await client.get("/Task", params={"_summary": "count"})).json()
    assert counted["total"] == 3 and "entry" not in counted


async def test_post_search_with_form_body(client: httpx.AsyncClient) -> None:
    s = await seed(client)
    response = await client.post(
        "/Task/_search",
        content="status=requested",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert {e["resource"]["id"] for e in response.json()["entry"]} == {s["t1"]["id"]}


async def test_paging_follows_next_links(client: httpx.AsyncClient) -> None:
    created = {
        (await make(client, {"resourceType": "Organization", "name": f"Org {i}"}))["id"]
        for i in range(7)
    }
    seen: list[str] = []
    url: str | None = "/Organization?name=org&_count=3"
    pages = 0
    while url:
        bundle = (await client.get(url)).json()
        pages += 1
        assert bundle["total"] == 7
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    assert pages == 3
    assert sorted(seen) == sorted(created)


async def test_updates_are_found_by_their_new_values(client: httpx.AsyncClient) -> None:
    s = await seed(client)
    task = {**s["t1"], "status": "received"}
    assert (await client.put(f"/Task/{task['id']}", json=task)).status_code == 200
    assert await ids(client, "/Task", status="requested") == set()
    assert await ids(client, "/Task", status="received") == {task["id"]}
