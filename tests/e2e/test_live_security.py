"""Issue #16 against the real server process: what DEBUG logs may never hold."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.sql import SqlResourceStore
from tests.e2e.test_live_server import (
    FHIR_JSON,
    LiveServer,
    _server_env,
    _wait_until_up,
    free_port,
    start_server,
)
from tests.factories import example_request
from tests.tokens import live_token

pytestmark = pytest.mark.live


@contextlib.asynccontextmanager
async def signed_in(server: LiveServer, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """Once the server answers: a client with a token got the way a deployed system gets one."""
    await _wait_until_up(server)
    token = await live_token(database_url, f"http://127.0.0.1:{server.port}")
    headers = {"content-type": FHIR_JSON, "authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=20.0) as live:
        yield live


async def _signing_key_pem(database_url: str) -> str:
    engine = create_engine(database_url)
    try:
        async with SqlResourceStore(engine).transaction(write=False) as tx:
            key = await tx.auth.signing_key()
    finally:
        await engine.dispose()
    assert key is not None
    return key.private_pem


async def test_debug_logs_hold_no_phi_no_secrets_and_no_key(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = _server_env(port, database_url)
    env.update(
        FHIR_ADAPTER_LOG_LEVEL="DEBUG",
        FHIR_ADAPTER_SUBSCRIPTION_ALLOWED_HOSTS="127.0.0.1",
    )
    server = start_server(port, env, tmp_path)
    tag = uuid.uuid4().hex[:10]
    family, given, secret = f"Fam{tag}", f"Giv{tag}", f"hook-secret-{tag}"
    birth_date, condition = "1953-07-19", f"Diagnosis{tag}"
    try:
        async with signed_in(server, database_url) as live:
            subscription = {
                "resourceType": "Subscription",
                "status": "requested",
                "reason": "DEBUG log probe",
                "criteria": "https://fhir-adapter.org/fhir/SubscriptionTopic/second-opinion-decision",
                "channel": {
                    "type": "rest-hook",
                    "endpoint": f"http://127.0.0.1:{free_port()}/hook",
                    "payload": "application/fhir+json",
                    "header": [f"Authorization: Bearer {secret}"],
                },
            }
            assert (await live.post("/Subscription", json=subscription)).status_code == 201
            bundle = example_request("denied", f"-{tag}")
            for entry in bundle["entry"]:
                resource = entry["resource"]
                if resource["resourceType"] == "Patient":
                    resource["name"] = [{"family": family, "given": [given]}]
                    resource["birthDate"] = birth_date
                    member_id = resource["identifier"][0]["value"]
                if resource["resourceType"] == "Condition":
                    resource["code"]["text"] = condition
            answer = await live.post("", json=bundle)
            assert answer.status_code == 200, answer.text
            patient = next(
                e["response"]["location"].split("/_history")[0]
                for e in answer.json()["entry"]
                if e["response"]["location"].startswith("Patient/")
            )
            assert family in (await live.get(f"/{patient}")).text
            found = await live.get("/Patient", params={"family": family, "birthdate": birth_date})
            assert found.json()["total"] == 1
    finally:
        server.stop()
    log = server.log()
    assert "DEBUG" in log  # the level took effect
    pem = await _signing_key_pem(database_url)
    key_body = "".join(pem.strip().splitlines()[1:-1])
    for needle in (family, given, birth_date, member_id, condition, secret, "PRIVATE KEY"):
        assert needle not in log, f"{needle!r} is in the DEBUG log"
    for chunk in (key_body[i : i + 24] for i in range(0, len(key_body) - 24, 24)):
        assert chunk not in log, "signing key material is in the DEBUG log"


async def test_control_characters_cannot_forge_log_lines(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    server = start_server(port, _server_env(port, database_url), tmp_path)
    forged = "2026-01-01 00:00:00,000 INFO fhir_adapter.access forged"
    try:
        await _wait_until_up(server)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as http:
            answer = await http.get("/Patient/x%0d%0a" + forged.replace(" ", "%20") + "%1b[31m")
            assert answer.status_code in (400, 401, 404)
    finally:
        server.stop()
    lines = server.log().splitlines()
    assert not [line for line in lines if line.startswith(forged)], lines
    assert "\x1b" not in server.log()
    assert any("\\r\\n" + forged in line for line in lines), lines


async def test_the_live_notifier_checks_the_address_it_connects_to(
    database_url: str, tmp_path: Path
) -> None:
    """Production settings (no allow-list): `localhost` passes the creation check as a name;
    the notifier resolves it when it connects, refuses the loopback address, and the owner
    reads a category, not whether the port was open."""
    port = free_port()
    server = start_server(port, _server_env(port, database_url), tmp_path)
    try:
        async with signed_in(server, database_url) as live:
            errors = []
            for target in (port, free_port()):  # an open port (this server) and a closed one
                subscription = {
                    "resourceType": "Subscription",
                    "status": "requested",
                    "reason": "SSRF probe",
                    "criteria": "https://fhir-adapter.org/fhir/SubscriptionTopic/second-opinion-decision",
                    "channel": {
                        "type": "rest-hook",
                        "endpoint": f"https://localhost:{target}/hook",
                        "payload": "application/fhir+json",
                    },
                }
                made = await live.post("/Subscription", json=subscription)
                assert made.status_code == 201, made.text
                stored = (await live.get(f"/Subscription/{made.json()['id']}")).json()
                assert stored["status"] == "error", stored
                errors.append(stored["error"])
            loopback = {
                **subscription,
                "channel": {**subscription["channel"], "endpoint": f"http://127.0.0.1:{port}/x"},
            }
            refused = await live.post("/Subscription", json=loopback)
            assert refused.status_code == 422, refused.text
    finally:
        server.stop()
    assert errors == ["handshake failed; delivery failed: endpoint not allowed"] * 2, errors
