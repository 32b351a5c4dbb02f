"""How a system finds out how to get in: the CapabilityStatement and smart-configuration are
public and agree on the token endpoint."""

from __future__ import annotations

import httpx

from fhir_adapter.api.app import create_app
from fhir_adapter.bootstrap import Container
from fhir_adapter.demo.ehr import ehr_router
from tests.conftest import BASE_URL


async def test_discovery_is_public_and_consistent(container: Container) -> None:
    transport = httpx.ASGITransport(app=create_app(container=container))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as anonymous:
        metadata = await anonymous.get("/metadata")
        smart = await anonymous.get("/.well-known/smart-configuration")
    assert metadata.status_code == 200 and smart.status_code == 200
    security = metadata.json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    [uris] = security["extension"]
    token_url = next(e["valueUri"] for e in uris["extension"] if e["url"] == "token")
    configuration = smart.json()
    assert token_url == configuration["token_endpoint"] == "http://testserver/auth/token"
    assert configuration["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert set(configuration["token_endpoint_auth_signing_alg_values_supported"]) == {
        "RS384",
        "ES384",
    }
    assert "client-confidential-asymmetric" in configuration["capabilities"]
    assert configuration["grant_types_supported"] == ["client_credentials"]


async def test_the_audit_trail_is_declared_read_only(client: httpx.AsyncClient) -> None:
    resources = (await client.get("/metadata")).json()["rest"][0]["resource"]
    audit = next(r for r in resources if r["type"] == "AuditEvent")
    assert {i["code"] for i in audit["interaction"]} == {
        "read",
        "vread",
        "history-instance",
        "search-type",
    }
    response = await client.post("/AuditEvent", json={"resourceType": "AuditEvent"})
    assert response.status_code == 405 and response.headers["allow"] == "GET"
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_the_demo_ehr_inbox_shows_what_arrived_to_this_machine_only(
    container: Container,
) -> None:
    app = create_app(container=container)
    app.include_router(ehr_router(), prefix="/ehr")
    outside = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    local = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with (
        httpx.AsyncClient(transport=outside, base_url="http://testserver") as remote,
        httpx.AsyncClient(transport=local, base_url="http://testserver") as here,
    ):
        assert (await remote.get("/ehr/clinic/fhir/Communication")).status_code == 404
        listed = await here.get("/ehr/clinic/fhir/Communication")
        assert listed.status_code == 200 and listed.json()["total"] == 0
