# ruff: noqa: F811  (the hub and subscriber fixtures are imported from test_subscriptions)
"""Issue #16: the attacks an outside probe found, each one replayed over HTTP against the app."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from fhir_adapter.api.app import create_app
from fhir_adapter.bootstrap import Container, build_container
from fhir_adapter.cli import app as cli
from fhir_adapter.config import Settings
from fhir_adapter.delivery.http import HttpDeliverer
from fhir_adapter.directory.client import DirectoryClient
from fhir_adapter.store.sql import SqlResourceStore
from fhir_adapter.workflow.subscriptions import PAS_TOPIC
from tests.conftest import BASE_URL, count_rows
from tests.e2e.test_subscriptions import (  # noqa: F401  (fixtures)
    hub,
    status_parameters,
    subscriber,
    subscription,
)
from tests.factories import example_request
from tests.fakes import FrozenClock
from tests.receiver import Receiver
from tests.tokens import bearer, fetch_token, register
from tests.worker import render_notices

Hub = tuple[Container, httpx.AsyncClient]


def as_client(
    container: Container, api: httpx.AsyncClient, client_id: str, scope: str, **kw: Any
) -> httpx.AsyncClient:
    """The same app, called with a token of another client."""
    assert container.issuer is not None
    token = container.issuer.mint(client_id, scope, **kw)
    return httpx.AsyncClient(
        transport=api._transport,
        base_url=BASE_URL,
        headers={"authorization": f"Bearer {token}"},
    )


async def drain(container: Container) -> None:
    while await container.delivery.run_due(limit=100):
        pass


def events(receiver: Receiver) -> list[dict[str, Any]]:
    return [
        n
        for n in receiver.notifications
        if status_parameters(n)["type"]["valueCode"] == "event-notification"
    ]


def resource_types(bundle: dict[str, Any]) -> set[str]:
    found = set()
    for entry in bundle.get("entry") or []:
        found.add(entry["resource"]["resourceType"])
        if entry["resource"]["resourceType"] == "Bundle":
            found |= resource_types(entry["resource"])
    return found


# -- High 1: notifications carry only what the owner may read ----------------------------------


async def test_a_subscriber_without_read_scopes_gets_no_resources(
    hub: Hub, subscriber: Receiver
) -> None:
    container, api = hub
    async with as_client(container, api, "probe", "system/Subscription.cruds") as probe:
        refused = await probe.post("/Subscription", json=subscription(topic=PAS_TOPIC))
        assert refused.status_code == 403, refused.text
        assert refused.json()["resourceType"] == "OperationOutcome"
        empty = await probe.post("/Subscription", json=subscription(content="empty"))
        assert empty.status_code == 201, empty.text
    # A subscriber that may read ClaimResponses, but not Patients, Claims or Coverage.
    scope = "system/Subscription.cruds system/ClaimResponse.r"
    async with as_client(container, api, "payer", scope) as payer:
        made = await payer.post("/Subscription", json=subscription(topic=PAS_TOPIC))
        assert made.status_code == 201, made.text
    submitted = example_request("out-of-network", "-h1")
    assert (await api.post("", json=submitted)).status_code == 200
    await drain(container)
    sent = events(subscriber)
    assert len(sent) == 2
    family = next(
        e["resource"]["name"][0]["family"]
        for e in submitted["entry"]
        if e["resource"]["resourceType"] == "Patient"
    )
    for bundle in sent:
        kinds = resource_types(bundle)
        assert "Patient" not in kinds and "Claim" not in kinds and "Coverage" not in kinds, kinds
        assert family not in str(bundle)
    assert sum("ClaimResponse" in resource_types(b) for b in sent) == 1  # the payer's


# -- Low 11: owners see their own; headers are write-only; heartbeats have a floor ------------


async def test_subscriptions_are_their_owners_and_headers_are_write_only(
    hub: Hub, subscriber: Receiver
) -> None:
    container, api = hub
    created = await api.post("/Subscription", json=subscription())
    assert created.status_code == 201, created.text
    sub = created.json()
    assert "header" not in sub["channel"], sub["channel"]
    read = (await api.get(f"/Subscription/{sub['id']}")).json()
    assert "header" not in read["channel"] and "subscriber-secret" not in str(read)
    listed = (await api.get("/Subscription")).json()
    assert "subscriber-secret" not in str(listed) and listed["total"] == 1
    # An update without the header keeps it: notifications still carry it.
    read["reason"] = "renamed"
    assert (await api.put(f"/Subscription/{sub['id']}", json=read)).status_code == 200
    await api.post("", json=example_request("denied", "-h11"))
    await drain(container)
    assert subscriber.hook_headers[-1]["authorization"] == "Bearer subscriber-secret"
    # Another client with every Subscription scope sees none of it.
    async with as_client(container, api, "other", "system/Subscription.cruds") as other:
        assert (await other.get("/Subscription")).json()["total"] == 0
        for url in (f"/Subscription/{sub['id']}", f"/Subscription/{sub['id']}/$status"):
            assert (await other.get(url)).status_code == 404, url
        stolen = {**read, "channel": {**read["channel"], "endpoint": "https://evil.example"}}
        assert (await other.put(f"/Subscription/{sub['id']}", json=stolen)).status_code in (
            403,
            404,
        )
    body = subscription()
    body["channel"]["extension"] = [
        {
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period",
            "valueUnsignedInt": 1,
        }
    ]
    refused = await api.post("/Subscription", json=body)
    assert refused.status_code == 422, refused.text
    assert "heartbeat" in refused.text


# -- High 2: the plan's decisions change only through the workflow -----------------------------


async def _decided(container: Container, api: httpx.AsyncClient, suffix: str) -> dict[str, Any]:
    answer = await api.post("", json=example_request("denied", suffix))
    assert answer.status_code == 200, answer.text
    await render_notices(container)
    keys = [e["response"]["location"].split("/_history")[0] for e in answer.json()["entry"]]
    patient = next(k for k in keys if k.startswith("Patient/"))
    task = next(k for k in keys if k.startswith("Task/"))
    found = (await api.get("/ClaimResponse", params={"patient": patient})).json()
    return {
        "patient": patient.split("/")[1],
        "task": (await api.get(f"/{task}")).json(),
        "claim_response": found["entry"][0]["resource"],
        "provenance": (await api.get("/Provenance", params={"_count": "1"})).json()["entry"][0][
            "resource"
        ],
        "communication": (await api.get("/Communication", params={"patient": patient})).json()[
            "entry"
        ][0]["resource"],
    }


async def test_clients_cannot_rewrite_the_plans_decisions(hub: Hub) -> None:
    container, api = hub
    d = await _decided(container, api, f"-h2{uuid.uuid4().hex[:6]}")
    response, task = d["claim_response"], d["task"]
    member = as_client(container, api, "member-app", "patient/*.cruds", patient=d["patient"])
    ehr = as_client(container, api, "ehr", "system/*.cruds")
    async with member, ehr:
        for caller in (member, ehr):
            forged = {**response, "preAuthRef": "FORGED-1"}
            put = await caller.put(f"/ClaimResponse/{response['id']}", json=forged)
            assert put.status_code == 403, put.text
            assert put.json()["resourceType"] == "OperationOutcome"
            new = {k: v for k, v in response.items() if k not in ("id", "meta")}
            posted = await caller.post("/ClaimResponse", json={**new, "outcome": "complete"})
            assert posted.status_code == 403, posted.text
            cancel = await caller.put(f"/Task/{task['id']}", json={**task, "status": "cancelled"})
            assert cancel.status_code == 403, cancel.text
            output = {k: v for k, v in task.items() if k != "output"}
            assert (await caller.put(f"/Task/{task['id']}", json=output)).status_code == 403
            notice = d["communication"]
            # The letter's attachments (PDF and HTML) are left out: they alone pass the test
            # settings' 64 KB body limit, and the attack is the status, not the letter.
            payload = [p for p in notice["payload"] if "contentAttachment" not in p]
            changed = {**notice, "status": "entered-in-error", "payload": payload}
            assert (
                await caller.put(f"/Communication/{notice['id']}", json=changed)
            ).status_code == 403
        provenance = d["provenance"]
        put = await ehr.put(f"/Provenance/{provenance['id']}", json={**provenance})
        assert put.status_code == 403, put.text
        fresh = {k: v for k, v in provenance.items() if k not in ("id", "meta")}
        assert (await ehr.post("/Provenance", json=fresh)).status_code == 403
    # Nothing changed.
    after = (await api.get(f"/ClaimResponse/{response['id']}")).json()
    assert after["meta"]["versionId"] == response["meta"]["versionId"]
    assert (await api.get(f"/Task/{task['id']}")).json()["status"] == task["status"]
    # Plan staff (a scope naming ClaimResponse) may correct a decision record; Provenance never.
    async with as_client(container, api, "plan-staff", "system/ClaimResponse.ru") as staff:
        fixed = {**response, "disposition": "corrected by plan staff"}
        put = await staff.put(f"/ClaimResponse/{response['id']}", json=fixed)
        assert put.status_code == 200, put.text
    # ...and that change leaves a Provenance naming the new version and the staff client.
    version = f"ClaimResponse/{response['id']}/_history/{put.json()['meta']['versionId']}"
    records = (await api.get("/Provenance", params={"_count": "500"})).json()["entry"]
    [record] = [
        e["resource"]
        for e in records
        if version in [t["reference"] for t in e["resource"]["target"]]
    ]
    assert record["agent"][0]["who"]["identifier"]["value"] == "plan-staff"
    async with as_client(container, api, "auditor", "system/Provenance.cruds") as auditor:
        put = await auditor.put(f"/Provenance/{provenance['id']}", json=provenance)
        assert put.status_code == 403 and "append-only" in put.text


# -- Medium 7: the demo EHR inbox only when asked, loopback only, bounded, audited -------------


async def test_the_demo_ehr_inbox_is_off_unless_asked_and_bounded_when_on(
    container: Container,
) -> None:
    def on(app: Any, address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")

    communication = {"resourceType": "Communication", "status": "completed"}

    def bundle(n: int) -> dict[str, Any]:
        entry = {"resource": communication, "request": {"method": "POST", "url": "Communication"}}
        return {"resourceType": "Bundle", "type": "transaction", "entry": [entry] * n}

    async with on(create_app(container=container), "127.0.0.1") as default:
        assert container.settings.demo is False
        assert (await default.post("/ehr/clinic/fhir", json=bundle(1))).status_code == 404
        assert (await default.get("/ehr/clinic/fhir/Communication")).status_code == 404
    demo_app = create_app(container.settings.model_copy(update={"demo": True}), container=container)
    async with on(demo_app, "203.0.113.7") as remote, on(demo_app, "127.0.0.1") as local:
        assert (await remote.post("/ehr/clinic/fhir", json=bundle(1))).status_code == 404
        assert (await remote.get("/ehr/clinic/fhir/Communication")).status_code == 404
        garbage = await local.post("/ehr/clinic/fhir", content=b"<html>")
        assert garbage.status_code == 400 and garbage.json()["resourceType"] == "OperationOutcome"
        odd = await local.post("/ehr/clinic/fhir", json={"type": "transaction", "entry": [1]})
        assert odd.status_code == 400, odd.text
        for _ in range(10):
            assert (await local.post("/ehr/clinic/fhir", json=bundle(100))).status_code == 200
        full = await local.post("/ehr/clinic/fhir", json=bundle(1))
        assert full.status_code == 413 and full.json()["resourceType"] == "OperationOutcome"
    await container.audit.flush()
    audit = (
        await container.resources.search(
            container.resources.parse_query("AuditEvent", [("_count", "500")])
        )
    ).matches
    addresses = [
        a.get("network", {}).get("address")
        for event in audit
        for a in event.content.get("agent", [])
    ]
    assert "203.0.113.7" in addresses  # the refused outside caller is on record
    assert len(audit) >= 16


# -- Medium 6: no memory for those without a token; slow and parallel bodies bounded -----------


def app_with(container: Container, **settings: Any) -> Any:
    return create_app(container.settings.model_copy(update=settings), container=container)


async def test_bodies_are_read_only_after_the_token_and_within_bounds(
    container: Container,
) -> None:
    pulled: list[int] = []
    release = asyncio.Event()
    started = asyncio.Event()

    async def upload(chunks: int, *, stall: bool = False) -> AsyncIterator[bytes]:
        yield b'{"resourceType": "Patient", "x": "'
        pulled.append(1)
        started.set()
        if stall:
            await release.wait()
        for _ in range(chunks):
            pulled.append(1)
            yield b"a" * 1024
        yield b'"}'

    app = app_with(container, body_timeout_seconds=0.5, max_concurrent_bodies=1)
    transport = httpx.ASGITransport(app=app)
    fhir = {"content-type": "application/fhir+json"}
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=fhir) as anon:
        answer = await anon.post("/Patient", content=upload(50))
        assert answer.status_code == 401, answer.text
        assert len(pulled) <= 1  # refused before the body was read
        headers = {"x-padding": "p" * 20_000, **bearer(container)}
        assert (await anon.get("/metadata", headers=headers)).status_code == 431
    async with httpx.AsyncClient(
        transport=transport, base_url=BASE_URL, headers={**fhir, **bearer(container)}
    ) as member:
        stalled = await member.post("/Patient", content=upload(1, stall=True))
        assert stalled.status_code == 408, stalled.text
        assert stalled.json()["resourceType"] == "OperationOutcome"
    slow = app_with(container, body_timeout_seconds=30.0, max_concurrent_bodies=1)
    transport = httpx.ASGITransport(app=slow)
    async with httpx.AsyncClient(
        transport=transport, base_url=BASE_URL, headers={**fhir, **bearer(container)}
    ) as member:
        started.clear()
        first = asyncio.create_task(member.post("/Patient", content=upload(1, stall=True)))
        await started.wait()
        second = await member.post("/Patient", json={"resourceType": "Patient"})
        assert second.status_code == 503, second.text
        release.set()
        assert (await first).status_code in (201, 400)  # it was received in full
        third = await member.post("/Patient", json={"resourceType": "Patient"})
        assert third.status_code == 201, third.text


# -- Low 10: removing a client revokes its tokens ----------------------------------------------


@contextlib.asynccontextmanager
async def container_with(
    settings: Settings,
    engine: AsyncEngine,
    directory: DirectoryClient,
    clock: FrozenClock,
    deliverer: HttpDeliverer | None = None,
    **overrides: Any,
) -> AsyncIterator[Container]:
    """A container like the `container` fixture's, with some settings changed."""
    container = await build_container(
        settings.model_copy(update=overrides),
        store=SqlResourceStore(engine, base_url=settings.fhir_base_url),
        directory=directory,
        deliverer=deliverer,
        clock=clock,
    )
    try:
        yield container
    finally:
        await container.aclose()


async def test_tokens_of_a_removed_client_are_refused(
    settings: Settings,
    engine: AsyncEngine,
    directory: DirectoryClient,
    clock: FrozenClock,
    database_url: str,
) -> None:
    async with container_with(
        settings, engine, directory, clock, auth_client_check_seconds=0
    ) as container:
        credentials = await register(container.store, "system/Task.rs")
        transport = httpx.ASGITransport(app=create_app(container=container))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            assert container.issuer is not None
            token = await fetch_token(
                http, container.issuer.urls.token_endpoint, credentials, "system/Task.rs"
            )
            headers = {"authorization": f"Bearer {token}"}
            assert (await http.get("/fhir/Task", headers=headers)).status_code == 200
            env = {"FHIR_ADAPTER_DATABASE_URL": database_url, "FHIR_ADAPTER_BASE_URL": BASE_URL}
            removed = await asyncio.to_thread(
                CliRunner().invoke, cli, ["clients", "remove", credentials.client_id], env=env
            )
            assert removed.exit_code == 0, removed.output
            refused = await http.get("/fhir/Task", headers=headers)
            assert refused.status_code == 401, refused.text
            assert "no longer registered" in refused.text
            again = await asyncio.to_thread(
                CliRunner().invoke, cli, ["clients", "remove", credentials.client_id], env=env
            )
            assert again.exit_code == 1


# -- Medium 4: identifier squatting ------------------------------------------------------------


async def test_a_member_cannot_squat_an_identifier_another_members_request_uses(
    client: httpx.AsyncClient, container: Container, engine: AsyncEngine
) -> None:
    def locations(answer: httpx.Response) -> dict[str, str]:
        return {
            e["response"]["location"].split("/")[0]: e["response"]["location"].split("/")[1]
            for e in answer.json()["entry"]
        }

    first = await client.post("", json=example_request("in-network-specialist-care", "-sqA"))
    assert first.status_code == 200, first.text
    a = locations(first)
    own_request = (await client.get(f"/ServiceRequest/{a['ServiceRequest']}")).json()
    member = as_client(container, client, "member-app", "patient/*.cruds", patient=a["Patient"])
    squat_system = "https://clinic-new.example.org/requests"
    async with member:
        squat = {k: v for k, v in own_request.items() if k not in ("id", "meta")}
        # The system an organization files requests in is closed to a member's token.
        taken = {**squat, "identifier": own_request["identifier"]}
        taken["identifier"] = [{**own_request["identifier"][0], "value": "SOR-next-one"}]
        refused = await member.post("/ServiceRequest", json=taken)
        assert refused.status_code == 403, refused.text
        assert refused.json()["issue"][0]["expression"] == ["ServiceRequest.identifier[0].system"]
        # A system nobody has used yet: the member's request is stored...
        squat["identifier"] = [{"system": squat_system, "value": "R-1"}]
        stored = await member.post("/ServiceRequest", json=squat)
        assert stored.status_code == 201, stored.text
    # ...and another member's request under that identifier is a conflict, never a link.
    bundle = example_request("denied", "-sqB")
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "ServiceRequest":
            entry["resource"]["identifier"] = [{"system": squat_system, "value": "R-1"}]
            entry["request"]["ifNoneExist"] = f"identifier={squat_system}|R-1"
    before = await count_rows(engine)
    conflict = await client.post("", json=bundle)
    assert conflict.status_code == 409, conflict.text
    assert a["Patient"] not in conflict.text
    assert await count_rows(engine) == before


# -- Low 8: very large searches are a 400 naming the limit; batch entries count one by one -----


async def test_oversized_searches_are_refused_with_the_limit_named(
    client: httpx.AsyncClient,
) -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}
    cases = [
        ({"name": "x" * 60_000}, "4096 characters"),
        ({"_id": ",".join(f"i{i}" for i in range(500))}, "100 values"),
        ({"identifier": ",".join(f"s|{i}" for i in range(300))}, "100 values"),
        ([(f"f{i}", "x") for i in range(5_000)], "the limit is 100"),
    ]
    for params, limit in cases:
        answer = await client.post("/Patient/_search", content=urlencode(params), headers=form)
        assert answer.status_code == 400, answer.text[:300]
        assert answer.json()["resourceType"] == "OperationOutcome"
        assert limit in answer.json()["issue"][0]["diagnostics"], answer.text[:300]
    assert (await client.get("/Patient", params={"_id": "a,b,c"})).status_code == 200


async def test_each_batch_entry_counts_against_the_rate_limit(
    settings: Settings, engine: AsyncEngine, directory: DirectoryClient, clock: FrozenClock
) -> None:
    async with container_with(settings, engine, directory, clock, rate_limit="20/minute") as c:
        transport = httpx.ASGITransport(app=create_app(container=c))
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, headers=bearer(c)
        ) as http:
            searches = [{"request": {"method": "GET", "url": "Patient?_count=1"}}] * 30
            batch = {"resourceType": "Bundle", "type": "batch", "entry": searches}
            answer = await http.post("", json=batch)
            assert answer.status_code == 429, answer.text[:300]
            assert answer.json()["resourceType"] == "OperationOutcome"
            small = {**batch, "entry": searches[:5]}
            assert (await http.post("", json=small)).status_code == 200


# -- Low 9: audit gaps ---------------------------------------------------------------------------


async def test_batch_reads_token_failures_and_early_refusals_are_audited(
    client: httpx.AsyncClient, container: Container
) -> None:
    answer = await client.post("", json=example_request("denied", "-audit"))
    keys = [e["response"]["location"].split("/_history")[0] for e in answer.json()["entry"]]
    task, patient = (next(k for k in keys if k.startswith(t)) for t in ("Task/", "Patient/"))
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": task}},
            {"request": {"method": "GET", "url": patient}},
        ],
    }
    assert (await client.post("", json=batch)).status_code == 200
    token = await client.post(
        "http://testserver/auth/token",
        content="grant_type=client_credentials",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert token.status_code == 400
    refused = await client.request("DELETE", f"/{task}")
    assert refused.status_code == 405
    await container.audit.flush()
    found = await client.get("/AuditEvent", params={"_count": "500"})
    events = [e["resource"] for e in found.json()["entry"]]

    def named(event: dict[str, Any]) -> set[str]:
        return {str(x.get("what", {}).get("reference")) for x in event.get("entity", [])}

    assert any(task in named(e) and e["subtype"][0]["code"] == "read" for e in events)
    assert any(patient in named(e) and e["subtype"][0]["code"] == "read" for e in events)
    token_events = [e for e in events if any(x.get("name") == "token" for x in e.get("entity", []))]
    assert token_events and token_events[0]["outcome"] == "4"
    deletes = [e for e in events if e["outcomeDesc"] == "HTTP 405"]
    assert deletes and deletes[0]["agent"][0].get("altId") == "test-client", deletes


async def test_a_removed_clients_subscriptions_carry_no_more_resources(
    settings: Settings,
    engine: AsyncEngine,
    directory: DirectoryClient,
    clock: FrozenClock,
    subscriber: Receiver,
) -> None:
    scope = "system/Subscription.cruds system/ClaimResponse.r"
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=subscriber.app)) as out,
        container_with(
            settings,
            engine,
            directory,
            clock,
            deliverer=HttpDeliverer(out),
            auth_client_check_seconds=0,
        ) as container,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(container=container)),
            base_url=BASE_URL,
            headers=bearer(container),
        ) as api,
    ):
        assert container.issuer is not None
        credentials = await register(container.store, scope)
        token = await fetch_token(api, container.issuer.urls.token_endpoint, credentials, scope)
        payer = {"authorization": f"Bearer {token}"}
        made = await api.post("/Subscription", json=subscription(), headers=payer)
        assert made.status_code == 201, made.text
        await api.post("", json=example_request("denied", "-rm1"))
        await drain(container)
        async with container.store.transaction() as tx:
            assert await tx.auth.remove_client(credentials.client_id)
        await api.post("", json=example_request("out-of-network", "-rm2"))
        await drain(container)
    before, after = events(subscriber)
    assert "ClaimResponse" in resource_types(before)
    assert resource_types(after) == {"Parameters"}, resource_types(after)
