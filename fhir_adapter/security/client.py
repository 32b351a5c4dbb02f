"""The client side of SMART Backend Services, for the demo, the benchmark and operators' scripts:
sign a client assertion with the system's private key and trade it for an access token."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from fhir_adapter.security.issuer import ASSERTION_TYPE


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    client_id: str
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    kid: str | None = None

    @property
    def algorithm(self) -> str:
        return "ES384" if isinstance(self.private_key, ec.EllipticCurvePrivateKey) else "RS384"

    def assertion(self, token_url: str, *, lifetime_seconds: int = 240) -> str:
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + lifetime_seconds,
            "jti": uuid.uuid4().hex,
        }
        headers = {"kid": self.kid} if self.kid else None
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers=headers)


def new_ec_key() -> tuple[ec.EllipticCurvePrivateKey, str, dict[str, Any]]:
    """A fresh P-384 key pair: the private key, its kid, and the public JWKS to register."""
    private = ec.generate_private_key(ec.SECP384R1())
    kid = uuid.uuid4().hex[:16]
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.update({"kid": kid, "alg": "ES384", "use": "sig"})
    return private, kid, {"keys": [jwk]}


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("the private key must be an EC (ES384) or RSA (RS384) key")
    return key


async def discover_token_endpoint(http: httpx.AsyncClient, fhir_base: str) -> str:
    response = await http.get(f"{fhir_base.rstrip('/')}/.well-known/smart-configuration")
    response.raise_for_status()
    return str(response.json()["token_endpoint"])


async def request_token(
    http: httpx.AsyncClient, token_url: str, credentials: ClientCredentials, scope: str
) -> dict[str, Any]:
    """The token response (access_token, expires_in, scope); raises on an OAuth error."""
    response = await http.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": credentials.assertion(token_url),
            "scope": scope,
        },
    )
    if response.status_code != 200:
        raise RuntimeError(
            f"token request refused: HTTP {response.status_code} {response.text[:300]}"
        )
    answer: dict[str, Any] = response.json()
    return answer
