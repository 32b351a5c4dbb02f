"""SMART Backend Services end to end, against a real `fhir-adapter serve` process on loopback.

A key pair is made here; its public half is registered with the real `fhir-adapter clients add`
command (a subprocess over the server's database); the client finds the token endpoint in
`/fhir/.well-known/smart-configuration`, signs a client assertion, trades it for an access token
and uses that on `/fhir`. Then everything the token endpoint must refuse, one case at a time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fhir_adapter.security.issuer import register_client
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.sql import SqlResourceStore
from tests.e2e.test_live_server import (
    LiveServer,
    _server_env,
    _wait_until_up,
    free_port,
    start_server,
)

pytestmark = pytest.mark.live

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FHIR_JSON = "application/fhir+json"
CLI = Path(sys.executable).parent / "fhir-adapter"


# ---------------------------------------------------------------------------------------------
# One server per backend for the whole module (starting one costs seconds)


@dataclass
class Smart:
    server: LiveServer
    database_url: str
    env: dict[str, str]
    workdir: Path

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The installed `fhir-adapter` command, configured like the server (same database)."""
        return subprocess.run(
            [str(CLI), *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def smart_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('smart') / 'fhir.db'}"
    url: str = request.getfixturevalue("postgres_database_url")
    return url


@pytest.fixture(scope="module")
async def smart(
    smart_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Smart]:
    workdir = tmp_path_factory.mktemp("smart-server")
    port = free_port()
    env = _server_env(port, smart_database_url)
    server = start_server(port, env, workdir)
    try:
        await _wait_until_up(server)
        yield Smart(server, smart_database_url, env, workdir)
    finally:
        code = server.stop()
    assert code == 0, f"the server exited with {code} after SIGTERM; log:\n{server.log()}"
    assert "Traceback" not in server.log(), server.log()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=15.0) as client:
        yield client


# ---------------------------------------------------------------------------------------------
# Keys, assertions, token requests


def ec_key() -> tuple[ec.EllipticCurvePrivateKey, str, dict[str, Any]]:
    private = ec.generate_private_key(ec.SECP384R1())
    kid = uuid.uuid4().hex[:16]
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.update({"kid": kid, "alg": "ES384", "use": "sig"})
    return private, kid, jwk


def rsa_key() -> tuple[rsa.RSAPrivateKey, str, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = uuid.uuid4().hex[:16]
    jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.update({"kid": kid, "alg": "RS384", "use": "sig"})
    return private, kid, jwk


def claims_for(client_id: str, token_url: str, **override: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "iat": now,
        "exp": now + 240,
        "jti": uuid.uuid4().hex,
    }
    claims.update(override)
    return {k: v for k, v in claims.items() if v is not None}  # None: leave the claim out


def sign(claims: dict[str, Any], private: Any, kid: str | None, algorithm: str = "ES384") -> str:
    return jwt.encode(claims, private, algorithm=algorithm, headers={"kid": kid} if kid else None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hmac_signed(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """An HS256 JWT built by hand (PyJWT rightly refuses an asymmetric key as an HMAC secret)."""
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = b64(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(mac)}"


def unsigned(claims: dict[str, Any], kid: str) -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}."


def token_form(assertion: str, scope: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        "scope": scope,
    }


async def discover(http: httpx.AsyncClient, base_url: str) -> dict[str, Any]:
    response = await http.get(f"{base_url}/.well-known/smart-configuration")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def write_jwks(path: Path, *jwks: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"keys": list(jwks)}))
    return path


def registered_client_id(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    assert result.returncode == 0, result.stdout + result.stderr
    client_id = re.search(r"^client_id: (\S+)$", result.stdout, re.M)
    token_url = re.search(r"^token endpoint: (\S+)$", result.stdout, re.M)
    assert client_id and token_url, result.stdout
    return client_id.group(1), token_url.group(1)


def fhir(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "accept": FHIR_JSON, "content-type": FHIR_JSON}


def tampered_payload(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


def flipped_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{header}.{payload}.{b64(bytes(raw))}"


def assert_invalid_token(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "login"


# ---------------------------------------------------------------------------------------------
# The flow


async def test_backend_services_flow_with_an_es384_key(
    smart: Smart, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    private, kid, jwk = ec_key()
    assert "d" not in jwk  # only the public half is registered
    jwks_file = write_jwks(tmp_path / "ehr.jwks.json", jwk)
    client_id, printed_url = registered_client_id(
        smart.cli(
            "clients",
            "add",
            "ehr-e2e",
            "--jwks",
            str(jwks_file),
            "--scope",
            "system/Patient.cru system/Observation.rs",
        )
    )

    configuration = await discover(http, smart.base_url)
    token_url = configuration["token_endpoint"]
    assert token_url == printed_url == f"{smart.origin}/auth/token"
    assert "private_key_jwt" in configuration["token_endpoint_auth_methods_supported"]
    assert "ES384" in configuration["token_endpoint_auth_signing_alg_values_supported"]
    assert "client_credentials" in configuration["grant_types_supported"]

    # Asking for more than was registered yields only what was registered.
    assertion = sign(claims_for(client_id, token_url), private, kid)
    response = await http.post(
        token_url, data=token_form(assertion, "system/Patient.cru system/Task.cruds")
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    answer = response.json()
    assert answer["token_type"] == "bearer"
    assert answer["expires_in"] == 300
    assert answer["scope"] == "system/Patient.cru"
    token = answer["access_token"]

    # The token verifies with the server's published key, for this FHIR base, from its issuer.
    jwks = (await http.get(configuration["jwks_uri"])).json()
    header = jwt.get_unverified_header(token)
    (published,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert "d" not in published
    claims = jwt.decode(
        token,
        key=jwt.PyJWK.from_dict(published).key,
        algorithms=[header["alg"]],
        audience=smart.base_url,
        issuer=configuration["issuer"],
    )
    assert claims["client_id"] == client_id
    assert claims["scope"] == "system/Patient.cru"
    assert claims["exp"] - claims["iat"] == 300

    patient = {"resourceType": "Patient", "name": [{"family": "Backend"}], "gender": "other"}
    created = await http.post(f"{smart.base_url}/Patient", json=patient, headers=fhir(token))
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    read = await http.get(f"{smart.base_url}/Patient/{pid}", headers=fhir(token))
    assert read.status_code == 200, read.text
    assert read.json() == created.json()
    # What the token was not granted stays out of reach.
    refused = await http.get(f"{smart.base_url}/Task", headers=fhir(token))
    assert refused.status_code == 403, refused.text
    assert refused.json()["issue"][0]["code"] == "forbidden"

    # Tampering: a widened scope, a broken signature, a stripped algorithm: all 401.
    for forged in (
        tampered_payload(token, scope="system/*.cruds system/AuditEvent.rs"),
        tampered_payload(token, exp=claims["exp"] + 3600),
        flipped_signature(token),
        unsigned(claims, header["kid"]),
        token[:-4],
    ):
        response = await http.get(f"{smart.base_url}/Patient/{pid}", headers=fhir(forged))
        assert_invalid_token(response)
        assert "Backend" not in response.text
    # The genuine token still works.
    read = await http.get(f"{smart.base_url}/Patient/{pid}", headers=fhir(token))
    assert read.status_code == 200, read.text
    # Neither the assertion nor the token (nor any part of them) reached the server's log.
    log = smart.server.log()
    assert f"/fhir/Patient/{pid}" in log  # the access log did record the requests
    for secret in (assertion, token):
        for part in secret.split("."):
            assert part not in log


async def test_backend_services_flow_with_an_rs384_key(
    smart: Smart, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    private, kid, jwk = rsa_key()
    assert "d" not in jwk
    jwks_file = write_jwks(tmp_path / "payer.jwks.json", jwk)
    client_id, _ = registered_client_id(
        smart.cli(
            "clients",
            "add",
            "payer-rsa",
            "--jwks",
            str(jwks_file),
            "--scope",
            "system/Patient.rs",
        )
    )
    token_url = (await discover(http, smart.base_url))["token_endpoint"]
    assertion = sign(claims_for(client_id, token_url), private, kid, "RS384")
    response = await http.post(token_url, data=token_form(assertion, "system/Patient.rs"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["scope"] == "system/Patient.rs"
    claims = jwt.decode(answer["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 300

    found = await http.get(
        f"{smart.base_url}/Patient",
        params={"_summary": "count"},
        headers=fhir(answer["access_token"]),
    )
    assert found.status_code == 200, found.text
    assert found.json()["type"] == "searchset"
    # Read-only: a create is refused.
    created = await http.post(
        f"{smart.base_url}/Patient",
        json={"resourceType": "Patient"},
        headers=fhir(answer["access_token"]),
    )
    assert created.status_code == 403, created.text

    # RS256 is not one of the algorithms a client assertion may use (RS384 / ES384 only).
    weak = sign(claims_for(client_id, token_url), private, kid, "RS256")
    response = await http.post(token_url, data=token_form(weak, "system/Patient.rs"))
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"


async def test_clients_list_shows_registered_clients(smart: Smart) -> None:
    _, _, jwk = ec_key()
    name = f"member-app-{uuid.uuid4().hex[:6]}"
    engine = create_engine(smart.database_url)
    try:
        client = await register_client(
            SqlResourceStore(engine),
            name=name,
            jwks={"keys": [jwk]},
            scope="patient/*.rs",
            patient="member-42",
        )
    finally:
        await engine.dispose()
    listed = smart.cli("clients", "list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    (line,) = [line for line in listed.stdout.splitlines() if line.startswith(client.client_id)]
    assert line == f"{client.client_id}  {name}  scope='patient/*.rs'  patient=member-42"
    # The list names clients; it never prints their keys.
    assert jwk["x"] not in listed.stdout and jwk["kid"] not in listed.stdout


async def test_bad_registrations_are_refused(smart: Smart, tmp_path: Path) -> None:
    empty = write_jwks(tmp_path / "empty.json")
    result = smart.cli("clients", "add", "bad", "--jwks", str(empty), "--scope", "system/*.rs")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error:"), result.stderr
    assert "client_id" not in result.stdout
    _, _, jwk = ec_key()
    private_jwk = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()), as_dict=True)
    engine = create_engine(smart.database_url)
    try:
        store = SqlResourceStore(engine)
        for jwks, scope in (
            ({"keys": [jwk]}, "openid launch"),  # grants no resource access
            ({"keys": [jwk]}, "system/Patient.rs?name=x"),  # a query we would not enforce
            ({"keys": "nope"}, "system/*.rs"),
            ({"keys": [{"kty": "EC", "crv": "P-384"}]}, "system/*.rs"),  # no usable key
            ({"keys": [private_jwk]}, "system/*.rs"),  # the private key, pasted by mistake
            ({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "system/*.rs"),  # a shared secret
        ):
            with pytest.raises(ValueError):
                await register_client(store, name="bad", jwks=jwks, scope=scope)
        async with store.transaction(write=False) as tx:
            assert "bad" not in {c.name for c in await tx.auth.list_clients()}
    finally:
        await engine.dispose()


# ---------------------------------------------------------------------------------------------
# The token endpoint refuses


@dataclass
class Registered:
    client_id: str
    kid: str
    private: ec.EllipticCurvePrivateKey
    token_url: str

    def assertion(self, **override: Any) -> str:
        return sign(claims_for(self.client_id, self.token_url, **override), self.private, self.kid)


@pytest.fixture(scope="module")
async def registered(smart: Smart) -> Registered:
    """A client registered for `system/Patient.rs` (in process, straight into the database)."""
    private, kid, jwk = ec_key()
    engine = create_engine(smart.database_url)
    try:
        client = await register_client(
            SqlResourceStore(engine),
            name="negatives",
            jwks={"keys": [jwk]},
            scope="system/Patient.rs",
        )
    finally:
        await engine.dispose()
    async with httpx.AsyncClient(timeout=10.0) as http:
        token_url = (await discover(http, smart.base_url))["token_endpoint"]
    return Registered(client.client_id, kid, private, token_url)


Request = Callable[[Registered], dict[str, Any]]  # keyword arguments for httpx.post


def form(assertion: Callable[[Registered], str], scope: str = "system/Patient.rs") -> Request:
    return lambda c: {"data": token_form(assertion(c), scope)}


def other_key(c: Registered, *, same_kid: bool) -> str:
    stranger = ec.generate_private_key(ec.SECP384R1())
    kid = c.kid if same_kid else uuid.uuid4().hex[:16]
    return sign(claims_for(c.client_id, c.token_url), stranger, kid)


def unknown_client(c: Registered) -> str:
    stranger = ec.generate_private_key(ec.SECP384R1())
    return sign(claims_for(uuid.uuid4().hex, c.token_url), stranger, c.kid)


# case: (the request, HTTP status, OAuth error, a word of the error_description saying why)
NEGATIVES: dict[str, tuple[Request, int, str, str]] = {
    "unknown-client": (form(unknown_client), 401, "invalid_client", "unknown client"),
    "wrong-aud": (
        form(lambda c: c.assertion(aud=c.token_url.replace("/auth/token", "/fhir"))),
        401,
        "invalid_client",
        "aud",
    ),
    "expired": (
        form(lambda c: c.assertion(exp=int(time.time()) - 120, iat=int(time.time()) - 400)),
        401,
        "invalid_client",
        "expired",
    ),
    "exp-too-far-ahead": (
        form(lambda c: c.assertion(exp=int(time.time()) + 600)),
        401,
        "invalid_client",
        "five minutes",
    ),
    "iss-not-sub": (
        form(lambda c: c.assertion(sub="someone-else")),
        401,
        "invalid_client",
        "iss and sub",
    ),
    "no-jti": (form(lambda c: c.assertion(jti=None)), 401, "invalid_client", "claims are invalid"),
    "alg-hs256": (
        form(
            lambda c: hmac_signed(
                claims_for(c.client_id, c.token_url), b"a-shared-secret-long-enough-0123", c.kid
            )
        ),
        401,
        "invalid_client",
        "RS384 or ES384",
    ),
    "alg-none": (
        form(lambda c: unsigned(claims_for(c.client_id, c.token_url), c.kid)),
        401,
        "invalid_client",
        "RS384 or ES384",
    ),
    "unregistered-key-new-kid": (
        form(lambda c: other_key(c, same_kid=False)),
        401,
        "invalid_client",
        "did not register",
    ),
    "unregistered-key-same-kid": (
        form(lambda c: other_key(c, same_kid=True)),
        401,
        "invalid_client",
        "signature",
    ),
    "alg-not-the-keys": (
        form(lambda c: sign(claims_for(c.client_id, c.token_url), rsa_key()[0], c.kid, "RS384")),
        401,
        "invalid_client",
        "signature",
    ),
    "garbage-assertion": (form(lambda c: "not.a.jwt"), 401, "invalid_client", "well-formed"),
    "replayed-jti": (form(lambda c: c.assertion()), 401, "invalid_client", "already used"),
    "scope-not-registered": (
        form(lambda c: c.assertion(), scope="system/Task.cru"),
        400,
        "invalid_scope",
        "requested scopes",
    ),
    "no-scope": (
        form(lambda c: c.assertion(), scope=""),
        400,
        "invalid_scope",
        "scope is required",
    ),
    "wrong-grant-type": (
        lambda c: {
            "data": {
                **token_form(c.assertion(), "system/Patient.rs"),
                "grant_type": "authorization_code",
            }
        },
        400,
        "unsupported_grant_type",
        "grant_type",
    ),
    "wrong-assertion-type": (
        lambda c: {
            "data": {
                **token_form(c.assertion(), "system/Patient.rs"),
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
            }
        },
        400,
        "invalid_request",
        "client_assertion_type",
    ),
    "not-form-encoded": (
        lambda c: {"json": token_form(c.assertion(), "system/Patient.rs")},
        400,
        "invalid_request",
        "x-www-form-urlencoded",
    ),
}


@pytest.mark.parametrize("case", list(NEGATIVES))
async def test_token_endpoint_refuses(
    smart: Smart, registered: Registered, http: httpx.AsyncClient, case: str
) -> None:
    build, status, error, why = NEGATIVES[case]
    request = build(registered)
    if case == "replayed-jti":  # the same assertion worked once
        first = await http.post(registered.token_url, **request)
        assert first.status_code == 200, first.text
    response = await http.post(registered.token_url, **request)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert why in body["error_description"], body  # refused for the reason the case is about
    assert set(body) == {"error", "error_description"}
    assert response.headers["cache-control"] == "no-store"
    assert "access_token" not in response.text


async def test_the_same_registered_client_gets_a_token(
    registered: Registered, http: httpx.AsyncClient
) -> None:
    """The control for the refusals above: the same client, done right, succeeds."""
    response = await http.post(
        registered.token_url, data=token_form(registered.assertion(), "system/Patient.rs")
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/Patient.rs"


async def test_a_replayed_jti_is_refused_even_when_signed_again(
    registered: Registered, http: httpx.AsyncClient
) -> None:
    assertion = registered.assertion()
    first = await http.post(registered.token_url, data=token_form(assertion, "system/Patient.rs"))
    assert first.status_code == 200, first.text
    # A new assertion (new exp, new signature) with the old jti: it is the jti that may not return.
    jti = jwt.decode(assertion, options={"verify_signature": False})["jti"]
    resigned = registered.assertion(jti=jti, exp=int(time.time()) + 200)
    third = await http.post(registered.token_url, data=token_form(resigned, "system/Patient.rs"))
    assert third.status_code == 401, third.text
    assert third.json()["error"] == "invalid_client"


async def test_one_assertion_sent_many_times_at_once_gets_one_token(
    registered: Registered,
) -> None:
    assertion = registered.assertion()

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(timeout=15.0) as http:  # separate connections
            return await http.post(
                registered.token_url, data=token_form(assertion, "system/Patient.rs")
            )

    responses = await asyncio.gather(*(send() for _ in range(6)))
    assert sorted(r.status_code for r in responses) == [200, 401, 401, 401, 401, 401], [
        r.text for r in responses
    ]
    assert {r.json().get("error") for r in responses if r.status_code == 401} == {"invalid_client"}


async def test_an_access_token_lives_five_minutes(
    registered: Registered, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        registered.token_url, data=token_form(registered.assertion(), "system/Patient.rs")
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    claims = jwt.decode(answer["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 300 == answer["expires_in"]
    assert abs(claims["iat"] - time.time()) < 30
    assert claims["sub"] == claims["client_id"] == registered.client_id
