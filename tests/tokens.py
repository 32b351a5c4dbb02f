"""Access tokens for tests: minted by the built-in issuer in process, or fetched over HTTP with
the real SMART Backend Services flow (a key pair made here, a registered client, a signed
client assertion)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from fhir_adapter.bootstrap import Container
from fhir_adapter.ports import ResourceStore
from fhir_adapter.security.issuer import ASSERTION_TYPE, register_client

# What the EHR-, payer- and operator-side tests act as: everything, audit log included.
ADMIN_SCOPE = "system/*.cruds system/AuditEvent.rs"


def bearer(
    container: Container, scope: str = ADMIN_SCOPE, patient: str | None = None
) -> dict[str, str]:
    assert container.issuer is not None
    token = container.issuer.mint("test-client", scope, patient=patient)
    return {"authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class ClientKey:
    client_id: str
    kid: str
    private: ec.EllipticCurvePrivateKey

    def assertion(
        self, token_url: str, *, lifetime: int = 240, jti: str | None = None, **extra: Any
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_url,
            "exp": now + lifetime,
            "iat": now,
            "jti": jti or uuid.uuid4().hex,
        }
        claims.update(extra)
        return jwt.encode(claims, self.private, algorithm="ES384", headers={"kid": self.kid})


def new_key_pair() -> tuple[ec.EllipticCurvePrivateKey, str, dict[str, Any]]:
    """A P-384 key, its kid, and the JWKS a client registers."""
    private = ec.generate_private_key(ec.SECP384R1())
    kid = uuid.uuid4().hex[:16]
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.update({"kid": kid, "alg": "ES384", "use": "sig"})
    return private, kid, {"keys": [jwk]}


async def register(
    store: ResourceStore,
    scope: str = ADMIN_SCOPE,
    *,
    patient: str | None = None,
    name: str = "test",
) -> ClientKey:
    private, kid, jwks = new_key_pair()
    client = await register_client(store, name=name, jwks=jwks, scope=scope, patient=patient)
    return ClientKey(client.client_id, kid, private)


async def fetch_token(
    http: httpx.AsyncClient, token_url: str, client: ClientKey, scope: str = ADMIN_SCOPE
) -> str:
    """The SMART Backend Services token request, over HTTP."""
    response = await http.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client.assertion(token_url),
            "scope": scope,
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def live_token(database_url: str, origin: str, scope: str = ADMIN_SCOPE) -> str:
    """For a server in another process: register a client in its database, then get a token
    from its token endpoint exactly as a deployed system would."""
    from fhir_adapter.store.sql import SqlResourceStore, create_engine

    engine = create_engine(database_url)
    try:
        client = await register(SqlResourceStore(engine), scope)
    finally:
        await engine.dispose()
    async with httpx.AsyncClient(timeout=10.0) as http:
        return await fetch_token(http, f"{origin}/auth/token", client, scope)
