"""TokenVerifier: which bearer tokens pass, which are refused (always as a 401, never a 500), and
how keys are found: a JWKS URL (mocked with respx) fetched again for an unknown kid, at most once
per refresh window; an external issuer configured through Settings."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.api.app import create_app
from fhir_adapter.bootstrap import build_container
from fhir_adapter.config import Settings
from fhir_adapter.directory.client import DirectoryClient
from fhir_adapter.errors import AuthenticationError
from fhir_adapter.security.tokens import RemoteKeys, StaticKeys, TokenVerifier
from fhir_adapter.store.sql import SqlResourceStore
from tests.conftest import BASE_URL

ISSUER = "https://idp.example/realms/plan"
AUDIENCE = "https://fhir.example/fhir"
JWKS_URL = "https://idp.example/realms/plan/protocol/openid-connect/certs"


class Key:
    """A signing key pair as an issuer holds it, with its public JWK."""

    def __init__(self, algorithm: str = "ES384") -> None:
        self.algorithm = algorithm
        self.kid = uuid.uuid4().hex[:12]
        self.private: Any
        if algorithm.startswith("ES"):
            curve = ec.SECP256R1() if algorithm == "ES256" else ec.SECP384R1()
            self.private = ec.generate_private_key(curve)
            self.jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwk.update({"kid": self.kid, "alg": algorithm, "use": "sig"})

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def token(self, *, kid: str | None = "", **override: Any) -> str:
        """A token for AUDIENCE from ISSUER; `override` changes claims (None removes one)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "service-account-payer",
            "client_id": "payer-um",
            "iat": now,
            "exp": now + 300,
            "scope": "system/Patient.rs system/Task.cru",
        }
        claims.update(override)
        claims = {k: v for k, v in claims.items() if v is not None}
        headers = {"kid": self.kid if kid == "" else kid} if kid is not None else None
        return jwt.encode(claims, self.private, algorithm=self.algorithm, headers=headers)


def jwks(*keys: Key) -> dict[str, Any]:
    return {"keys": [k.jwk for k in keys]}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


def claims_now(**override: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "iat": now, "exp": now + 300, **override}


def verifier(keys: Any, leeway: float = 30.0) -> TokenVerifier:
    return TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE, leeway_seconds=leeway)


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await verifier.verify(token)
    assert caught.value.status_code == 401
    assert caught.value.headers()["WWW-Authenticate"].startswith("Bearer ")
    return str(caught.value)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=2.0) as client:
        yield client


# ---------------------------------------------------------------------------------------------
# Keys from a JWKS URL


@respx.mock
async def test_a_rotated_key_is_fetched_and_accepted(http: httpx.AsyncClient) -> None:
    old, new = Key(), Key()
    route = respx.get(JWKS_URL).respond(json=jwks(old))
    tokens = verifier(RemoteKeys(http, JWKS_URL, refresh_seconds=0.2))

    access = await tokens.verify(old.token())
    assert access.client_id == "payer-um"
    assert access.scope == "system/Patient.rs system/Task.cru"
    assert route.call_count == 1
    for _ in range(5):  # a known kid never costs a fetch
        await tokens.verify(old.token())
    assert route.call_count == 1

    # The issuer rotates: it publishes the new key next to the old one and signs with the new.
    await asyncio.sleep(0.25)
    route.respond(json=jwks(old, new))
    assert (await tokens.verify(new.token())).client_id == "payer-um"
    assert route.call_count == 2
    assert (await tokens.verify(old.token())).client_id == "payer-um"  # still listed
    assert route.call_count == 2


@respx.mock
async def test_refetching_is_throttled(http: httpx.AsyncClient) -> None:
    known, rotated = Key(), Key()
    route = respx.get(JWKS_URL).respond(json=jwks(known))
    flood = [rotated.token() for _ in range(10)]
    flood += [known.token(kid=uuid.uuid4().hex) for _ in range(10)]
    tokens = verifier(RemoteKeys(http, JWKS_URL, refresh_seconds=1.0))
    await tokens.verify(known.token())
    assert route.call_count == 1

    # Within the window, tokens naming keys we do not know cost no fetch: a flood of made-up
    # kids cannot make us hammer the issuer.
    route.respond(json=jwks(known, rotated))
    for token in flood:
        assert "key" in await refused(tokens, token)
    assert route.call_count == 1

    # After the window, one fetch, however many requests wait for it at once.
    await asyncio.sleep(1.05)
    results = await asyncio.gather(*(tokens.verify(rotated.token()) for _ in range(10)))
    assert {r.client_id for r in results} == {"payer-um"}
    assert route.call_count == 2


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.Response(503, text="down for maintenance"),
        httpx.Response(200, text="<html>login</html>"),
        httpx.Response(200, json={"keys": "none"}),
        httpx.Response(200, json=[1, 2]),
    ],
    ids=["refused", "timeout", "503", "html", "keys-not-a-list", "not-an-object"],
)
@respx.mock
async def test_an_unreachable_jwks_is_a_401(
    http: httpx.AsyncClient, failure: Exception | httpx.Response
) -> None:
    key = Key()
    if isinstance(failure, httpx.Response):
        respx.get(JWKS_URL).mock(return_value=failure)
    else:
        respx.get(JWKS_URL).mock(side_effect=failure)
    tokens = verifier(RemoteKeys(http, JWKS_URL, refresh_seconds=60))
    assert "key" in await refused(tokens, key.token())


@respx.mock
async def test_a_jwks_that_comes_back_is_used(http: httpx.AsyncClient) -> None:
    key = Key()
    route = respx.get(JWKS_URL).mock(side_effect=httpx.ConnectError("down"))
    tokens = verifier(RemoteKeys(http, JWKS_URL, refresh_seconds=0.2))
    await refused(tokens, key.token())
    route.mock(side_effect=None, return_value=httpx.Response(200, json=jwks(key)))
    await asyncio.sleep(0.25)
    assert (await tokens.verify(key.token())).client_id == "payer-um"


# ---------------------------------------------------------------------------------------------
# Claims


@pytest.fixture
def key() -> Key:
    return Key()


@pytest.fixture
def tokens(key: Key) -> TokenVerifier:
    return verifier(StaticKeys(jwks(key)), leeway=30.0)


async def test_leeway_boundaries(key: Key, tokens: TokenVerifier) -> None:
    now = int(time.time())
    assert await tokens.verify(key.token(iat=now - 310, exp=now - 10))
    assert "expired" in await refused(tokens, key.token(iat=now - 360, exp=now - 60))
    assert await tokens.verify(key.token(nbf=now + 10))
    assert "not valid yet" in await refused(tokens, key.token(nbf=now + 120))
    strict = verifier(tokens.keys, leeway=0)
    assert "expired" in await refused(strict, key.token(iat=now - 310, exp=now - 10))


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ({"exp": None}, "claims are invalid"),
        ({"iss": None}, "claims are invalid"),
        ({"aud": None}, "claims are invalid"),
        ({"iss": "https://evil.example/realms/plan"}, "issuer"),
        ({"iss": ISSUER + "/"}, "issuer"),
        ({"aud": "https://other.example/fhir"}, "aud"),
        ({"aud": [AUDIENCE + "/other"]}, "aud"),
        ({"exp": "tomorrow"}, "claims are invalid"),
    ],
    ids=[
        "no-exp", "no-iss", "no-aud", "other-iss", "iss-with-slash", "other-aud",
        "aud-list-without-us", "exp-not-a-number",
    ],
)  # fmt: skip
async def test_claims_that_are_refused(
    key: Key, tokens: TokenVerifier, override: dict[str, Any], why: str
) -> None:
    assert why in await refused(tokens, key.token(**override))


async def test_an_audience_list_naming_us_is_accepted(key: Key, tokens: TokenVerifier) -> None:
    access = await tokens.verify(key.token(aud=["account", AUDIENCE]))
    assert access.client_id == "payer-um"


async def test_access_is_read_from_the_claims(key: Key, tokens: TokenVerifier) -> None:
    access = await tokens.verify(
        key.token(client_id=None, azp="member-app", scope="patient/*.rs openid", patient="p-1")
    )
    assert access.client_id == "member-app"
    assert access.patient == "p-1"
    assert access.scope == "patient/*.rs"  # `openid` grants no resource access
    bare = await tokens.verify(key.token(scope=None))
    assert bare.grants == ()


# ---------------------------------------------------------------------------------------------
# Algorithms


async def test_alg_none_is_refused(key: Key, tokens: TokenVerifier) -> None:
    for alg in ("none", "None", "NONE"):
        token = handmade({"alg": alg, "typ": "JWT", "kid": key.kid}, claims_now())
        assert "must be signed" in await refused(tokens, token)


async def test_hs256_signed_with_the_public_key_is_refused(key: Key, tokens: TokenVerifier) -> None:
    """The classic algorithm confusion: the issuer's public key used as an HMAC secret."""
    claims = claims_now(scope="system/*.cruds")
    for secret in (key.public_pem(), json.dumps(key.jwk).encode()):
        for alg, digest in (("HS256", hashlib.sha256), ("HS384", hashlib.sha384)):
            header = {"alg": alg, "typ": "JWT", "kid": key.kid}
            signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
            mac = hmac.new(secret, signing_input.encode(), digest).digest()
            assert "must be signed" in await refused(tokens, f"{signing_input}.{b64(mac)}")


async def test_a_header_naming_another_key_type_is_refused() -> None:
    """An RS token header over an EC key (and the reverse) fails cleanly, not with a 500."""
    ec_key, rsa_key = Key("ES384"), Key("RS384")
    tokens = verifier(StaticKeys(jwks(ec_key, rsa_key)))
    signed_by_rsa = rsa_key.token(kid=ec_key.kid)  # RS384 header, pointing at the EC key
    assert await refused(tokens, signed_by_rsa)
    signed_by_ec = ec_key.token(kid=rsa_key.kid)
    assert await refused(tokens, signed_by_ec)
    p256 = Key("ES256")  # ES256 names P-256; the listed key is on P-384
    assert await refused(tokens, p256.token(kid=ec_key.kid))


@pytest.mark.parametrize("algorithm", ["RS256", "RS384", "ES256", "ES384"])
async def test_each_asymmetric_algorithm_is_accepted(algorithm: str) -> None:
    key = Key(algorithm)
    tokens = verifier(StaticKeys(jwks(key)))
    assert (await tokens.verify(key.token())).client_id == "payer-um"


async def test_malformed_tokens_are_refused(key: Key, tokens: TokenVerifier) -> None:
    good = key.token()
    header, payload, signature = good.split(".")
    for token in (
        "",
        "abc",
        "a.b.c",
        f"{header}.{payload}",
        f"{header}.{payload}.",
        f"{header}.{payload}.{signature[::-1]}",
        f"{header}.{b64(b'not json')}.{signature}",
        f"{b64(b'[1]')}.{payload}.{signature}",
    ):
        await refused(tokens, token)


async def test_private_or_symmetric_jwks_entries_are_not_used() -> None:
    """A JWKS with the private half (or an HMAC secret) in it is a mistake; such keys are skipped
    rather than trusted, and a token naming one is refused."""
    key = Key()
    private = ECAlgorithm.to_jwk(key.private, as_dict=True) | {"kid": key.kid}
    secret = {"kty": "oct", "k": b64(b"s" * 32), "kid": "hmac"}
    tokens = verifier(StaticKeys({"keys": [private, secret]}))
    assert tokens.keys.keys == {}  # type: ignore[attr-defined]
    assert "key" in await refused(tokens, key.token())


async def test_a_key_without_kid_is_only_picked_when_it_is_the_only_one() -> None:
    first, second = Key(), Key()
    alone = verifier(StaticKeys(jwks(first)))
    assert await alone.verify(first.token(kid=None))
    both = verifier(StaticKeys(jwks(first, second)))
    assert "key" in await refused(both, first.token(kid=None))
    assert await both.verify(second.token())


# ---------------------------------------------------------------------------------------------
# An external issuer, configured through Settings, in the running app


async def external_app(
    settings: Settings, engine: AsyncEngine, directory: DirectoryClient
) -> tuple[httpx.AsyncClient, Any]:
    store = SqlResourceStore(engine, base_url=settings.fhir_base_url)
    container = await build_container(settings, store=store, directory=directory)
    transport = httpx.ASGITransport(app=create_app(container=container))
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL), container


async def test_an_external_issuer_from_a_jwks_file(
    settings: Settings,
    engine: AsyncEngine,
    directory: DirectoryClient,
    tmp_path: Path,
) -> None:
    key = Key("RS256")
    jwks_file = tmp_path / "idp-jwks.json"
    jwks_file.write_text(json.dumps(jwks(key)))
    configured = settings.model_copy(
        update={"auth_issuer": ISSUER, "auth_jwks_file": jwks_file, "auth_audience": AUDIENCE}
    )
    client, container = await external_app(configured, engine, directory)
    async with client:
        assert container.issuer is None  # no built-in issuer next to an external one
        token = key.token(scope="system/Patient.cru")
        auth = {"authorization": f"Bearer {token}", "accept": "application/fhir+json"}
        created = await client.post(
            "/Patient", json={"resourceType": "Patient", "gender": "female"}, headers=auth
        )
        assert created.status_code == 201, created.text
        read = await client.get(f"/Patient/{created.json()['id']}", headers=auth)
        assert read.status_code == 200, read.text
        assert (await client.get("/Task", headers=auth)).status_code == 403

        for bad in (
            key.token(aud=BASE_URL),  # our base, but the configured audience is another
            key.token(iss="http://testserver/auth"),  # the built-in issuer's name
            Key("RS256").token(kid=key.kid),  # an impostor's key under a listed kid
        ):
            response = await client.get("/Patient", headers={"authorization": f"Bearer {bad}"})
            assert response.status_code == 401, response.text
            assert response.json()["resourceType"] == "OperationOutcome"

        configuration = (await client.get("/.well-known/smart-configuration")).json()
        assert configuration["issuer"] == ISSUER
        assert "token_endpoint" not in configuration  # none configured
        served = await client.post(
            "http://testserver/auth/token", data={"grant_type": "client_credentials"}
        )
        assert served.status_code == 404  # the built-in token endpoint is off
    await container.audit.close()


async def test_an_external_issuer_from_a_jwks_url_with_the_issuer_down(
    settings: Settings, engine: AsyncEngine, directory: DirectoryClient
) -> None:
    key = Key()
    configured = settings.model_copy(
        update={
            "auth_issuer": ISSUER,
            "auth_jwks_url": JWKS_URL,
            "auth_audience": AUDIENCE,
            "auth_jwks_refresh_seconds": 0.0,
        }
    )
    client, container = await external_app(configured, engine, directory)
    async with client, respx.mock(assert_all_called=False) as mock:
        route = mock.get(JWKS_URL).mock(side_effect=httpx.ConnectError("idp down"))
        auth = {"authorization": f"Bearer {key.token()}"}
        down = await client.get("/Patient", headers=auth)
        assert down.status_code == 401, down.text
        assert down.json()["resourceType"] == "OperationOutcome"
        assert "idp down" not in down.text
        route.mock(side_effect=None, return_value=httpx.Response(200, json=jwks(key)))
        up = await client.get("/Patient", headers=auth)
        assert up.status_code == 200, up.text
        assert route.call_count == 2
    await container.aclose()
