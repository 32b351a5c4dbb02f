"""What a production service needs around its API: security headers on every answer, CORS off
unless configured, per-client rate limits, 401 for every malformed Authorization header, 500s
that reveal nothing, and no secrets (tokens, assertions) in the logs."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.api.app import create_app
from fhir_adapter.bootstrap import Container, build_container
from fhir_adapter.config import Settings
from fhir_adapter.directory.client import DirectoryClient
from fhir_adapter.ports.store import StoreTransaction
from fhir_adapter.security.issuer import ASSERTION_TYPE
from fhir_adapter.store.sql import SqlResourceStore
from tests.conftest import BASE_URL
from tests.tokens import ADMIN_SCOPE, register

FHIR_JSON = "application/fhir+json"
TOKEN_URL = "http://testserver/auth/token"
FORM = {"content-type": "application/x-www-form-urlencoded"}

Build = Callable[..., Awaitable[Container]]


@pytest.fixture
async def build(
    settings: Settings, engine: AsyncEngine, directory: DirectoryClient
) -> AsyncIterator[Build]:
    """Containers over the test database with some settings changed."""
    built: list[Container] = []

    async def make(store: Any = None, **changes: Any) -> Container:
        configured = settings.model_copy(update=changes)
        container = await build_container(
            configured,
            store=store or SqlResourceStore(engine, base_url=configured.fhir_base_url),
            directory=directory,
        )
        built.append(container)
        return container

    yield make
    for container in built:
        await container.audit.close()


def http_client(
    container: Container,
    *,
    token: str | None = None,
    settings: Settings | None = None,
    address: str = "127.0.0.1",
) -> httpx.AsyncClient:
    headers = {"accept": FHIR_JSON, "content-type": FHIR_JSON}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    app = create_app(settings, container=container)
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers)


def mint(container: Container, client_id: str = "test-client", scope: str = ADMIN_SCOPE) -> str:
    assert container.issuer is not None
    return container.issuer.mint(client_id, scope)


# ---------------------------------------------------------------------------------------------
# Security headers


API_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


async def test_security_headers_on_every_kind_of_answer(
    client: httpx.AsyncClient, container: Container
) -> None:
    created = await client.post("/Patient", json={"resourceType": "Patient"})
    async with http_client(container) as anonymous:
        answers = {
            "200 metadata": await client.get("/metadata"),
            "200 read": await client.get(created.headers["location"]),
            "201 create": created,
            "200 smart-configuration": await client.get("/.well-known/smart-configuration"),
            "400 bad json": await client.post("/Patient", content=b"{"),
            "404": await client.get("/Patient/nope"),
            "405": await client.delete("/Patient/nope"),
            "413": await client.post("/Patient", content=b"x" * (128 * 1024)),
            "401": await anonymous.get("/Patient"),
            "401 bad token": await anonymous.get(
                "/Patient", headers={"authorization": "Bearer x.y.z"}
            ),
            "403": await http_client(container, token=mint(container, "c", "system/Task.rs")).get(
                "/Patient"
            ),
            "400 token endpoint": await anonymous.post(
                TOKEN_URL, data={"grant_type": "password"}, headers=FORM
            ),
            "404 outside /fhir": await anonymous.get("http://testserver/nothing-here"),
        }
    expected_status = {name: int(name.split()[0]) for name in answers}
    for name, response in answers.items():
        assert response.status_code == expected_status[name], (name, response.text)
        for header, value in API_HEADERS.items():
            assert response.headers.get(header) == value, (name, header, response.headers)
        assert "strict-transport-security" not in response.headers  # plain-HTTP base URL
        assert "server" not in response.headers or "uvicorn" not in response.headers["server"]


async def test_the_api_docs_may_load_their_scripts(client: httpx.AsyncClient) -> None:
    docs = await client.get("http://testserver/docs")
    assert docs.status_code == 200
    assert "content-security-policy" not in docs.headers
    assert docs.headers["x-frame-options"] == "DENY"
    assert docs.headers["x-content-type-options"] == "nosniff"


async def test_hsts_behind_an_https_base_url(container: Container) -> None:
    https = container.settings.model_copy(update={"base_url": "https://fhir.example/fhir"})
    async with http_client(container, settings=https) as anonymous:
        response = await anonymous.get("/metadata")
    assert response.headers["strict-transport-security"] == "max-age=31536000"


# ---------------------------------------------------------------------------------------------
# CORS


PREFLIGHT = {
    "access-control-request-method": "GET",
    "access-control-request-headers": "authorization",
}


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    origin = {"origin": "https://app.example"}
    for response in (
        await client.get("/metadata", headers=origin),
        await client.get("/Patient", headers=origin),
        await client.options("/Patient", headers={**origin, **PREFLIGHT}),
        await client.options("/metadata", headers={**origin, **PREFLIGHT}),
    ):
        assert not any(h.startswith("access-control-") for h in response.headers), response.headers


async def test_cors_allows_only_the_configured_origins(build: Build) -> None:
    # model_copy does not validate: the setting as Settings holds it (a comma-separated
    # environment value becomes this tuple, tests/unit/test_config.py)
    container = await build(cors_origins=("https://app.example", "https://other-app.example"))
    async with http_client(container, token=mint(container)) as client:
        allowed = await client.options(
            "/Patient", headers={"origin": "https://app.example", **PREFLIGHT}
        )
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "DELETE" not in allowed.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in allowed.headers

        refused = await client.options(
            "/Patient", headers={"origin": "https://evil.example", **PREFLIGHT}
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers

        simple = await client.get("/Patient", headers={"origin": "https://app.example"})
        assert simple.status_code == 200
        assert simple.headers["access-control-allow-origin"] == "https://app.example"
        assert "location" in simple.headers["access-control-expose-headers"].lower()
        foreign = await client.get("/Patient", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in foreign.headers
        # A preflight still answers with the security headers.
        assert allowed.headers["x-content-type-options"] == "nosniff"


# ---------------------------------------------------------------------------------------------
# Rate limits


def assert_throttled(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["retry-after"]) <= 60
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "throttled"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_client_over_its_limit_gets_429_and_others_do_not(build: Build) -> None:
    container = await build(rate_limit="5/minute")
    busy = http_client(container, token=mint(container, "busy-client"))
    calm = http_client(container, token=mint(container, "calm-client"))
    async with busy, calm:
        for _ in range(4):
            assert (await busy.get("/Patient")).status_code == 200
        created = await busy.post("/Patient", json={"resourceType": "Patient"})
        assert created.status_code == 201
        throttled = await busy.post("/Patient", json={"resourceType": "Patient"})
        assert_throttled(throttled)
        assert_throttled(await busy.get("/Patient"))
        # Nothing was written by the refused request.
        counted = await calm.get("/Patient", params={"_summary": "count"})
        assert counted.status_code == 200
        assert counted.json()["total"] == 1
        # A fresh token for the same client does not reset its budget.
        async with http_client(container, token=mint(container, "busy-client")) as again:
            assert_throttled(await again.get("/Patient"))
        for _ in range(4):
            assert (await calm.get("/Patient")).status_code == 200
    # Discovery stays reachable.
    async with http_client(container) as anonymous:
        assert (await anonymous.get("/metadata")).status_code == 200


async def test_unauthenticated_failures_are_limited_per_address(build: Build) -> None:
    container = await build(rate_limit="5/minute")
    async with (
        http_client(container, address="198.51.100.7") as prober,
        http_client(container, address="198.51.100.8") as neighbour,
        http_client(container, token=mint(container), address="198.51.100.7") as legit,
    ):
        for header in ("", "Basic x", "Bearer", "Bearer not-a-jwt", "Bearer a.b.c"):
            response = await prober.get("/Patient", headers={"authorization": header})
            assert response.status_code == 401, response.text
        assert_throttled(await prober.get("/Patient", headers={"authorization": "Bearer x.y.z"}))
        assert (await neighbour.get("/Patient")).status_code == 401
        # A client with a valid token is counted by its client id, not by the address.
        assert (await legit.get("/Patient")).status_code == 200


async def test_the_token_endpoint_is_rate_limited(build: Build) -> None:
    container = await build(rate_limit="5/minute")
    async with http_client(container) as anonymous:
        for _ in range(5):
            response = await anonymous.post(
                TOKEN_URL, data={"grant_type": "password"}, headers=FORM
            )
            assert response.status_code == 400
            assert response.json()["error"] == "unsupported_grant_type"
        assert_throttled(
            await anonymous.post(TOKEN_URL, data={"grant_type": "password"}, headers=FORM)
        )


# ---------------------------------------------------------------------------------------------
# 401


@pytest.mark.parametrize(
    ("authorization", "error"),
    [
        (None, None),
        ("", None),
        ("Basic dXNlcjpwYXNz", "invalid_request"),
        ("Basic x", "invalid_request"),
        ("Bearer", "invalid_request"),
        ("Bearer ", "invalid_request"),
        ("Bearer    ", "invalid_request"),
        ("Token abc", "invalid_request"),
        ("Bearer abc", "invalid_token"),
        ("Bearer a.b.c", "invalid_token"),
        ("Bearer a b", "invalid_token"),
        ("Bearer " + "A" * 8000, "invalid_token"),
        ("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "invalid_token"),
    ],
    ids=[
        "missing", "empty", "basic", "basic-short", "bearer-alone", "bearer-space",
        "bearer-spaces", "other-scheme", "not-a-jwt", "three-garbage-parts", "two-words",
        "huge", "alg-none",
    ],
)  # fmt: skip
async def test_malformed_authorization_is_401(
    container: Container, authorization: str | None, error: str | None
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    async with http_client(container) as anonymous:
        # Even a request that would fail otherwise (bad JSON, unknown type) is a 401 first.
        for response in (
            await anonymous.get("/Patient", headers=headers),
            await anonymous.post("/Patient", content=b"{not json", headers=headers),
            await anonymous.get("/NoSuchType/1", headers=headers),
            await anonymous.post("", content=b"[]", headers=headers),
        ):
            assert response.status_code == 401, response.text
            challenge = response.headers["www-authenticate"]
            assert challenge.startswith('Bearer realm="fhir-adapter"')
            if error is None:
                assert "error=" not in challenge
            else:
                assert f'error="{error}"' in challenge
            outcome = response.json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert outcome["issue"][0]["code"] == "login"


async def test_a_token_in_the_query_string_is_not_accepted(container: Container) -> None:
    """RFC 6750 §2.3 tokens in URLs end up in logs and histories: only the header counts."""
    token = mint(container)
    async with http_client(container) as anonymous:
        response = await anonymous.get("/Patient", params={"access_token": token})
        assert response.status_code == 401, response.text
        form = {"content-type": "application/x-www-form-urlencoded"}
        response = await anonymous.post(
            "/Patient/_search", content=f"access_token={token}".encode(), headers=form
        )
        assert response.status_code == 401, response.text


async def test_the_bearer_scheme_is_case_insensitive(container: Container) -> None:
    async with http_client(container) as anonymous:
        for scheme in ("bearer", "BEARER", "Bearer"):
            headers = {"authorization": f"{scheme} {mint(container)}"}
            assert (await anonymous.get("/Patient", headers=headers)).status_code == 200


async def test_expired_and_foreign_tokens_are_401(container: Container) -> None:
    assert container.issuer is not None
    issuer = container.issuer
    now = time.time()
    issuer.now = lambda: now - 3600  # an hour ago: long expired
    expired = issuer.mint("test-client", ADMIN_SCOPE)
    issuer.now = time.time
    stranger = jwt.encode(
        {"iss": issuer.urls.issuer, "aud": issuer.urls.audience, "exp": int(now) + 60},
        "a-shared-secret-that-is-long-enough!!",
        algorithm="HS256",
    )
    async with http_client(container) as anonymous:
        for token, why in ((expired, "expired"), (stranger, "must be signed")):
            response = await anonymous.get("/Patient", headers={"authorization": f"Bearer {token}"})
            assert response.status_code == 401, response.text
            assert why in response.json()["issue"][0]["diagnostics"]


def server_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the service logged (the test's own HTTP client logs its URLs under `httpx`)."""
    return "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith(("httpx", "httpcore"))
    )


# ---------------------------------------------------------------------------------------------
# 500s reveal nothing


SQL = "SELECT content FROM resources WHERE family = 'Quetzalcoatlson' AND birth_date = '1931-07-04'"


class BrokenStore:
    """The real store until `broken` is set; then every transaction fails like a sick database."""

    def __init__(self, inner: SqlResourceStore, error: Exception) -> None:
        self.inner = inner
        self.error = error
        self.broken = False

    def transaction(self, *, write: bool = True) -> AbstractAsyncContextManager[StoreTransaction]:
        if self.broken:
            raise self.error
        return self.inner.transaction(write=write)

    async def close(self) -> None:
        await self.inner.close()


@pytest.mark.parametrize(
    "error",
    [
        OperationalError(SQL, {"family": "Quetzalcoatlson"}, Exception("server closed the connection")),
        RuntimeError(f"query failed: {SQL}"),
        KeyError("Quetzalcoatlson"),
    ],
    ids=["sqlalchemy", "runtime", "keyerror"],
)  # fmt: skip
async def test_a_500_reveals_nothing(
    build: Build,
    engine: AsyncEngine,
    error: Exception,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = BrokenStore(SqlResourceStore(engine, base_url=BASE_URL), error)
    container = await build(store=store)
    caplog.set_level(logging.DEBUG)
    async with http_client(container, token=mint(container)) as client:
        created = await client.post("/Patient", json={"resourceType": "Patient"})
        assert created.status_code == 201
        store.broken = True
        try:
            responses = [
                await client.get("/Patient", params={"family": "Quetzalcoatlson"}),
                await client.get(created.headers["location"]),
                await client.post("/Patient", json={"resourceType": "Patient"}),
            ]
            with pytest.raises(type(error)):  # the audit trail cannot write either...
                await container.audit.flush()
        finally:
            store.broken = False
    for response in responses:
        assert response.status_code == 500, response.text
        assert response.headers["content-type"].startswith(FHIR_JSON)
        assert response.headers["x-content-type-options"] == "nosniff"
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        (issue,) = outcome["issue"]
        assert issue["code"] == "exception"
        assert issue["diagnostics"].startswith("Internal server error (error id ")
        for leak in (
            "SELECT", "Quetzalcoatlson", "1931", "Traceback", "File ", ".py", "sqlalchemy",
            "OperationalError", "RuntimeError", "KeyError", "server closed",
        ):  # fmt: skip
            assert leak not in response.text, leak
    logged = server_log(caplog)
    assert "error id" in logged
    for leak in ("SELECT", "Quetzalcoatlson", "1931", "server closed"):
        assert leak not in logged, leak
    assert all(r.exc_info is None for r in caplog.records)
    # ...and keeps the failed requests' events until the store is back.
    assert await container.audit.flush() == 4
    async with http_client(container, token=mint(container)) as client:
        events = (await client.get("/AuditEvent", params={"outcome": "8"})).json()
    assert events["total"] == 3


# ---------------------------------------------------------------------------------------------
# No secrets in the logs


async def test_tokens_and_assertions_are_never_logged(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    registered = await register(container.store, "system/Patient.rs")
    secrets: list[str] = []
    async with http_client(container) as anonymous:
        assertion = registered.assertion(TOKEN_URL)
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": "system/Patient.rs",
        }
        answer = await anonymous.post(TOKEN_URL, data=form, headers=FORM)
        assert answer.status_code == 200, answer.text
        token = answer.json()["access_token"]
        replayed = await anonymous.post(TOKEN_URL, data=form, headers=FORM)
        assert replayed.status_code == 401
        bad_scope = await anonymous.post(
            TOKEN_URL,
            data={**form, "client_assertion": registered.assertion(TOKEN_URL), "scope": "x/y"},
            headers=FORM,
        )
        assert bad_scope.status_code == 400
        secrets += [assertion, token, form["client_assertion"]]

        tampered = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
        garbage = f"not-a-jwt-{uuid.uuid4().hex}"
        for value, status in (
            (token, 200),
            (tampered, 401),
            (garbage, 401),
            (token + "x", 401),
        ):
            response = await anonymous.get("/Patient", headers={"authorization": f"Bearer {value}"})
            assert response.status_code == status, response.text
            secrets.append(value)
        await container.audit.flush()
    assert caplog.records, "the requests should log something"
    logged = server_log(caplog)
    for secret in secrets:
        for piece in secret.split("."):  # no header, payload or signature either
            if len(piece) >= 16:
                assert piece not in logged, piece
    assert garbage not in logged
