"""The audit trail: one AuditEvent per `/fhir` request (reads, searches, writes, transactions,
operations, refusals), valid FHIR R4, free of PHI, readable only with its own scope, written by
the server alone, and flushed when a live server is stopped."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.api.app import create_app
from fhir_adapter.bootstrap import Container
from fhir_adapter.codes import CLIENT_ID_SYSTEM
from fhir_adapter.fhir.validation import validate_resource
from fhir_adapter.store.tables import resources
from tests.conftest import BASE_URL
from tests.e2e.test_live_server import _server_env, _wait_until_up, free_port, start_server
from tests.e2e.test_operations import decide_params
from tests.factories import example_request
from tests.tokens import live_token

FHIR_JSON = "application/fhir+json"
RESTFUL = "http://hl7.org/fhir/restful-interaction"


def as_client(container: Container, scope: str | None, client_id: str) -> httpx.AsyncClient:
    """An in-process HTTP client acting as `client_id` with `scope` (None: no token at all)."""
    headers = {"content-type": FHIR_JSON, "accept": FHIR_JSON}
    if scope is not None:
        assert container.issuer is not None
        headers["authorization"] = f"Bearer {container.issuer.mint(client_id, scope)}"
    transport = httpx.ASGITransport(app=create_app(container=container))
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers)


@pytest.fixture
async def reader(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    async with as_client(container, "system/*.rs", "reader-client") as client:
        yield client


async def audit_events(client: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    """Every AuditEvent matching `params`, all pages."""
    found: list[dict[str, Any]] = []
    response = await client.get("/AuditEvent", params={"_count": "100", **params})
    while True:
        assert response.status_code == 200, response.text
        bundle = response.json()
        found.extend(e["resource"] for e in bundle.get("entry", []))
        next_link = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not next_link:
            return found
        response = await client.get(next_link[0])


def summary(event: dict[str, Any]) -> tuple[Any, ...]:
    """(subtype, action, outcome, HTTP status, client id, entity references, entity names)."""
    (subtype,) = event["subtype"]
    assert subtype["system"] == RESTFUL
    (agent,) = event["agent"]
    assert agent["requestor"] is True
    identifier = agent["who"].get("identifier")
    if identifier is not None:
        assert identifier["system"] == CLIENT_ID_SYSTEM
    return (
        subtype["code"],
        event["action"],
        event["outcome"],
        event["outcomeDesc"],
        identifier["value"] if identifier else None,
        tuple(e["what"]["reference"] for e in event.get("entity", []) if "reference" in e["what"]),
        tuple(e["what"]["display"] for e in event.get("entity", []) if "display" in e["what"]),
    )


def location_id(response: httpx.Response) -> str:
    return str(response.headers["location"]).split("/_history")[0].rsplit("/", 1)[1]


async def test_every_kind_of_request_leaves_one_audit_event(
    client: httpx.AsyncClient, container: Container, reader: httpx.AsyncClient
) -> None:
    family, birth_date, member = "Quetzalcoatlson", "1931-07-04", f"MBR-{uuid.uuid4().hex[:8]}"
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:member", "value": member}],
        "name": [{"family": family, "given": ["Xiuhtecuhtli"]}],
        "birthDate": birth_date,
    }
    created = await client.post("/Patient", json=patient)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    assert (await client.get(f"/Patient/{pid}")).status_code == 200
    searched = await client.get(
        "/Patient", params={"family": family, "birthdate": birth_date, "identifier": member}
    )
    assert searched.status_code == 200, searched.text
    assert searched.json()["total"] == 1

    bundle = example_request("review", uuid.uuid4().hex[:6])
    transaction = await client.post("", json=bundle)
    assert transaction.status_code == 200, transaction.text
    task_location = next(
        e["response"]["location"]
        for e in transaction.json()["entry"]
        if e["response"]["location"].startswith("Task/")
    )
    task_id = task_location.split("/")[1]
    reason = {"valueString": "Duplicate of an opinion given in October."}
    decided = await client.post(
        f"/Task/{task_id}/$decide", json=decide_params("denied", reason=reason)
    )
    assert decided.status_code == 200, decided.text

    async with as_client(container, None, "") as anonymous:
        unauthenticated = await anonymous.get(f"/Patient/{pid}")
    assert unauthenticated.status_code == 401
    forbidden = await reader.post("/Task", json={"resourceType": "Task"})
    assert forbidden.status_code == 403

    assert await container.audit.flush() == 7
    events = await audit_events(client)
    for event in events:
        assert validate_resource(event) == "AuditEvent"
        assert event["type"]["code"] == "rest"
        assert event["recorded"] and event["meta"]["versionId"] == "1"

    admin = "test-client"
    assert Counter(summary(e) for e in events) == Counter(
        [
            ("create", "C", "0", "HTTP 201", admin, (f"Patient/{pid}",), ()),
            ("read", "R", "0", "HTTP 200", admin, (f"Patient/{pid}",), ()),
            ("search-type", "E", "0", "HTTP 200", admin, (), ("Patient",)),
            ("transaction", "E", "0", "HTTP 200", admin, (), ()),
            ("operation", "E", "0", "HTTP 200", admin, (f"Task/{task_id}",), ("$decide",)),
            ("read", "R", "4", "HTTP 401", None, (f"Patient/{pid}",), ()),
            ("create", "C", "4", "HTTP 403", "reader-client", (), ("Task",)),
        ]
    )
    (refused,) = [e for e in events if e["outcomeDesc"] == "HTTP 401"]
    assert refused["agent"][0]["who"] == {"display": "unauthenticated caller"}
    assert refused["agent"][0]["network"]["address"]

    # No PHI: neither what was written, nor what was searched for, nor the access token.
    text = json.dumps(events)
    secrets = {family, "Xiuhtecuhtli", birth_date, member, "Duplicate of an opinion"}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            secrets |= {resource["birthDate"], resource["name"][0]["family"]}
            secrets |= {i["value"] for i in resource["identifier"]}
    secrets.add(client.headers["authorization"].split()[1])
    for secret in secrets:
        assert secret not in text, secret


async def test_audit_events_can_be_searched(
    client: httpx.AsyncClient, container: Container
) -> None:
    created = await client.post("/Patient", json={"resourceType": "Patient"})
    pid = created.json()["id"]
    await client.get(f"/Patient/{pid}")
    await client.get("/Patient/does-not-exist")
    assert await container.audit.flush() == 3

    def codes(events: list[dict[str, Any]]) -> list[str]:
        return sorted(e["subtype"][0]["code"] + ":" + e["outcomeDesc"] for e in events)

    assert codes(await audit_events(client, subtype=f"{RESTFUL}|read")) == [
        "read:HTTP 200",
        "read:HTTP 404",
    ]
    assert codes(await audit_events(client, action="C")) == ["create:HTTP 201"]
    assert codes(await audit_events(client, outcome="4")) == ["read:HTTP 404"]
    assert codes(await audit_events(client, entity=f"Patient/{pid}")) == [
        "create:HTTP 201",
        "read:HTTP 200",
    ]
    today = container.workflow.clock().date().isoformat()
    assert len(await audit_events(client, date=today)) == 3
    assert await audit_events(client, date="lt2000-01-01") == []
    await container.audit.flush()  # the searches above were audited too
    assert len(await audit_events(client, subtype="search-type")) == 6
    await container.audit.flush()
    by_client = await audit_events(client, altid="test-client")  # the conftest token's client
    assert len(by_client) == 3 + 7 and all(
        e["agent"][0]["altId"] == "test-client" for e in by_client
    )
    assert await audit_events(client, altid="some-other-client") == []


async def test_refused_oversized_bodies_are_audited(
    client: httpx.AsyncClient, container: Container
) -> None:
    too_big = b'{"resourceType": "Patient", "x": "' + b"a" * (70 * 1024) + b'"}'
    response = await client.post("/Patient", content=too_big)
    assert response.status_code == 413
    assert await container.audit.flush() == 1
    [event] = await audit_events(client, outcome="4")
    assert event["subtype"][0]["code"] == "create" and event["outcomeDesc"] == "HTTP 413"


async def test_malformed_paths_leave_no_caller_text_in_the_trail(
    client: httpx.AsyncClient, container: Container
) -> None:
    """A path segment is the caller's text: only real types, ids and operation names are kept."""
    paths = (
        "/Patient/Jane Doe 1970-01-01",
        "/JaneDoe19700101",
        "/Patient/p1/$Jane-Doe-1970",
        "/Patient/" + "x" * 500,
    )
    for path in paths:
        response = await client.get(path)
        assert response.status_code in (400, 404, 405), (path, response.text)
    assert await container.audit.flush() == len(paths)
    events = await audit_events(client)
    assert len(events) == len(paths)
    text = json.dumps(events)
    for secret in ("Jane", "1970", "x" * 65):
        assert secret not in text, secret
    assert {summary(e)[0] for e in events} == {"read", "search-type", "operation"}
    for event in events:
        assert validate_resource(event) == "AuditEvent"


async def test_patient_scoped_requests_name_the_patient(container: Container) -> None:
    async with as_client(container, "patient/*.rs", "member-app") as member:
        assert container.issuer is not None
        member.headers["authorization"] = "Bearer " + container.issuer.mint(
            "member-app", "patient/*.rs", patient="p-77"
        )
        assert (await member.get("/Patient/p-77")).status_code == 404
    await container.audit.flush()
    async with as_client(container, "system/AuditEvent.rs", "auditor") as auditor:
        (event,) = await audit_events(auditor, patient="Patient/p-77")
    assert summary(event)[4] == "member-app"
    assert {"reference": "Patient/p-77"} in [e["what"] for e in event["entity"]]


async def test_clients_cannot_write_audit_events(
    client: httpx.AsyncClient, container: Container
) -> None:
    forged = {
        "resourceType": "AuditEvent",
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
        },
        "recorded": "2026-11-25T10:00:00Z",
        "agent": [{"requestor": True, "who": {"display": "nobody"}}],
        "source": {"observer": {"display": "forger"}},
    }
    created = await client.post("/AuditEvent", json=forged)
    assert created.status_code == 405, created.text
    assert created.headers["allow"] == "GET"
    assert created.json()["resourceType"] == "OperationOutcome"
    updated = await client.put("/AuditEvent/forged", json={**forged, "id": "forged"})
    assert updated.status_code == 405, updated.text
    entry = {"resource": forged, "request": {"method": "POST", "url": "AuditEvent"}}
    in_a_transaction = await client.post(
        "", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    )
    assert in_a_transaction.status_code == 405, in_a_transaction.text
    in_a_batch = await client.post(
        "", json={"resourceType": "Bundle", "type": "batch", "entry": [entry]}
    )
    assert in_a_batch.status_code == 200, in_a_batch.text
    assert in_a_batch.json()["entry"][0]["response"]["status"].startswith("405")
    await container.audit.flush()
    events = await audit_events(client)
    assert all(e["source"]["observer"]["display"] == "fhir-adapter" for e in events)
    assert len(events) == 4  # the four refused attempts, recorded by the server


async def test_the_audit_log_needs_its_own_scope(
    client: httpx.AsyncClient, container: Container, reader: httpx.AsyncClient
) -> None:
    await client.get("/Patient")
    await container.audit.flush()
    (event,) = await audit_events(client)
    for path in (
        "/AuditEvent",
        f"/AuditEvent/{event['id']}",
        f"/AuditEvent/{event['id']}/_history",
        f"/AuditEvent/{event['id']}/_history/1",
    ):
        response = await reader.get(path)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["issue"][0]["code"] == "forbidden"
    form = {"content-type": "application/x-www-form-urlencoded"}
    searched = await reader.post("/AuditEvent/_search", content=b"outcome=0", headers=form)
    assert searched.status_code == 403, searched.text
    async with as_client(container, "system/*.cruds", "writer-client") as writer:
        assert (await writer.get("/AuditEvent")).status_code == 403
    async with as_client(container, "patient/*.rs", "member-app") as member:
        assert (await member.get("/AuditEvent")).status_code == 403
    async with as_client(container, "system/AuditEvent.rs", "auditor") as auditor:
        read = await auditor.get(f"/AuditEvent/{event['id']}")
        assert read.status_code == 200, read.text
        assert read.json() == event


# ---------------------------------------------------------------------------------------------
# A live server writes what it queued when it is stopped


async def test_a_live_server_flushes_the_audit_trail_on_sigterm(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = _server_env(port, database_url)
    env["FHIR_ADAPTER_AUDIT_FLUSH_SECONDS"] = "60"  # nothing is written before shutdown
    server = start_server(port, env, tmp_path)

    async def stored() -> int:
        statement = select(func.count()).where(resources.c.resource_type == "AuditEvent")
        async with engine.connect() as conn:
            return int((await conn.execute(statement)).scalar_one())

    try:
        await _wait_until_up(server)
        token = await live_token(database_url, f"http://127.0.0.1:{port}")
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as http:
            auth = {"authorization": f"Bearer {token}", "content-type": FHIR_JSON}
            created = await http.post("/Patient", json={"resourceType": "Patient"}, headers=auth)
            assert created.status_code == 201, created.text
            pid = location_id(created)
            assert (await http.get(f"/Patient/{pid}", headers=auth)).status_code == 200
            assert (await http.get("/Patient")).status_code == 401
        await asyncio.sleep(0.3)
        assert await stored() == 0  # still queued in the server's memory
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert "Traceback" not in server.log(), server.log()
    assert await stored() == 3
    statement = select(resources.c.content).where(resources.c.resource_type == "AuditEvent")
    async with engine.connect() as conn:
        rows = [row[0] for row in await conn.execute(statement)]
    events = [row if isinstance(row, dict) else json.loads(row) for row in rows]
    assert sorted(summary(e)[:4] for e in events) == [
        ("create", "C", "0", "HTTP 201"),
        ("read", "R", "0", "HTTP 200"),
        ("search-type", "E", "4", "HTTP 401"),
    ]
