"""The built-in authorization server for the embedded default: SMART Backend Services.

A registered system (`fhir-adapter clients add`) asks `POST /auth/token` for an access token with
`grant_type=client_credentials` and a `client_assertion`: a JWT it signed (RS384 or ES384) with a
key from its registered JWKS, `iss` = `sub` = its client id, `aud` = the token endpoint, an `exp`
at most five minutes ahead and a `jti` never used before (SMART App Launch 2.x,
backend-services). It gets a five-minute access token, signed with this server's ES384 key,
carrying the scopes it asked for that its registration allows.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from fhir_adapter.access.scopes import grantable, parse_scopes
from fhir_adapter.ports.store import ClientRecord, ResourceStore, SigningKey
from fhir_adapter.security.tokens import (
    REGISTERED_CLAIM,
    StaticKeys,
    has_private_members,
    key_fits,
    parse_jwks,
)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ("RS384", "ES384")
TOKEN_ALGORITHM = "ES384"
MAX_ASSERTION_SECONDS = 300


class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer of the token endpoint."""

    def __init__(self, error: str, description: str, *, status_code: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status_code = status_code

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True, slots=True)
class IssuerUrls:
    issuer: str
    token_endpoint: str
    jwks_uri: str
    audience: str  # the FHIR base the tokens are for


def new_signing_key() -> SigningKey:
    private = ec.generate_private_key(ec.SECP384R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return SigningKey(uuid.uuid4().hex, TOKEN_ALGORITHM, pem)


# The advisory lock every process takes before writing what the first start writes.
FIRST_START_LOCK = "first-start"


class RegisteredClients:
    """Whether a client is still registered, asked of the store at most every `cache_seconds` per
    client (issue #16: `clients remove` in another process takes effect within that time)."""

    def __init__(
        self,
        store: ResourceStore,
        *,
        cache_seconds: float = 30.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self.now = now
        self._seen: dict[str, tuple[bool, float]] = {}

    async def __call__(self, client_id: str) -> bool:
        cached = self._seen.get(client_id)
        if cached is not None and self.now() < cached[1]:
            return cached[0]
        async with self.store.transaction(write=False) as tx:
            found = await tx.auth.get_client(client_id) is not None
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[client_id] = (found, self.now() + self.cache_seconds)
        return found


class BuiltInIssuer:
    def __init__(
        self,
        store: ResourceStore,
        key: SigningKey,
        urls: IssuerUrls,
        *,
        lifetime_seconds: int = 300,
        leeway_seconds: float = 30.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.urls = urls
        self.lifetime = lifetime_seconds
        self.leeway = leeway_seconds
        self.now = now
        self.kid = key.kid
        self.algorithm = key.algorithm
        private = serialization.load_pem_private_key(key.private_pem.encode(), password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise ValueError("the stored signing key is not an EC key")
        self._private = private

    @classmethod
    async def load(cls, store: ResourceStore, urls: IssuerUrls, **options: Any) -> BuiltInIssuer:
        """The issuer with the stored signing key; the first start makes and stores one (all
        processes sharing the database then sign and verify with the same key)."""
        async with store.transaction() as tx:
            # Instances started together on a new database: one makes the key, the others wait
            # here until it is committed and then read it (issue #13).
            await tx.resources.lock(FIRST_START_LOCK)
            key = await tx.auth.signing_key()
            if key is None:
                key = new_signing_key()
                await tx.auth.add_signing_key(key, now=datetime.now(UTC))
        return cls(store, key, urls, **options)

    def jwks(self) -> dict[str, Any]:
        """The public half of the signing key, for `jwks_uri` and for verifying our own tokens."""
        public = self._private.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        jwk.update({"kid": self.kid, "alg": self.algorithm, "use": "sig"})
        return {"keys": [jwk]}

    def key_source(self) -> StaticKeys:
        return StaticKeys(self.jwks())

    def mint(
        self, client_id: str, scope: str, *, patient: str | None = None, registered: bool = False
    ) -> str:
        """A signed access token for `client_id` (also used by tests). `registered`: the token
        endpoint issued it to a registered client, so it is refused once that client is removed."""
        now = int(self.now())
        claims: dict[str, Any] = {
            "iss": self.urls.issuer,
            "sub": client_id,
            "client_id": client_id,
            "aud": self.urls.audience,
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime,
            "jti": uuid.uuid4().hex,
            "scope": scope,
        }
        if patient:
            claims["patient"] = patient
        if registered:
            claims[REGISTERED_CLAIM] = True
        return jwt.encode(
            claims, self._private, algorithm=self.algorithm, headers={"kid": self.kid}
        )

    async def exchange(self, form: dict[str, str]) -> dict[str, Any]:
        """Answer a token request (form fields) with an access token, or raise OAuthError."""
        if form.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion") or ""
        requested = form.get("scope") or ""
        if not requested.strip():
            raise OAuthError("invalid_scope", "scope is required")
        client = await self._authenticate(assertion)
        granted = grantable(requested, client.scope)
        if not parse_scopes(granted):
            raise OAuthError(
                "invalid_scope", "none of the requested scopes is allowed for this client"
            )
        token = self.mint(client.client_id, granted, patient=client.patient, registered=True)
        answer: dict[str, Any] = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.lifetime,
            "scope": granted,
        }
        if client.patient:
            answer["patient"] = client.patient
        return answer

    async def _authenticate(self, assertion: str) -> ClientRecord:
        def invalid(why: str) -> OAuthError:
            return OAuthError("invalid_client", why, status_code=401)

        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise invalid("client_assertion is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ASSERTION_ALGORITHMS:
            raise invalid(
                f"client_assertion must be signed with {' or '.join(ASSERTION_ALGORITHMS)}"
            )
        client_id = unverified.get("iss")
        if not isinstance(client_id, str) or unverified.get("sub") != client_id:
            raise invalid("client_assertion iss and sub must both be the client id")
        async with self.store.transaction(write=False) as tx:
            client = await tx.auth.get_client(client_id[:64])
        if client is None:
            raise invalid("unknown client")
        keys = parse_jwks(client.jwks)
        kid = header.get("kid")
        key = keys.get(kid) if isinstance(kid, str) else None
        if key is None and len(keys) == 1 and kid is None:
            key = next(iter(keys.values()))
        if key is None:
            raise invalid("client_assertion is signed with a key the client did not register")
        if not key_fits(key, algorithm):
            raise invalid("client_assertion signature is invalid (alg does not fit the key)")
        try:
            claims = jwt.decode(
                assertion,
                key=key.key,
                algorithms=[algorithm],
                audience=self.urls.token_endpoint,
                issuer=client_id,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "sub", "aud", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise invalid("client_assertion has expired") from None
        except jwt.InvalidAudienceError:
            raise invalid("client_assertion aud must be the token endpoint URL") from None
        except jwt.PyJWTError:
            raise invalid("client_assertion signature or claims are invalid") from None
        now = self.now()
        if claims["exp"] > now + MAX_ASSERTION_SECONDS + self.leeway:
            raise invalid("client_assertion exp must be at most five minutes ahead")
        async with self.store.transaction() as tx:
            fresh = await tx.auth.use_assertion(
                client_id,
                str(claims["jti"])[:255],
                expires_at=datetime.fromtimestamp(claims["exp"] + self.leeway, UTC),
                now=datetime.fromtimestamp(now, UTC),
            )
        if not fresh:
            raise invalid("client_assertion jti was already used")
        return client


async def register_client(
    store: ResourceStore, *, name: str, jwks: Any, scope: str, patient: str | None = None
) -> ClientRecord:
    """Register a system with the built-in issuer; its client id is new and random."""
    listed = jwks.get("keys") if isinstance(jwks, dict) else None
    if isinstance(listed, list) and any(
        isinstance(k, dict) and has_private_members(k) for k in listed
    ):
        raise ValueError("the JWKS holds private key material; register only the public keys")
    if not parse_jwks(jwks):
        raise ValueError("the JWKS holds no usable signature key")
    if not parse_scopes(scope):
        raise ValueError("the scope grants no access; use SMART scopes such as system/Task.cru")
    client = ClientRecord(uuid.uuid4().hex, name, jwks, scope, patient)
    async with store.transaction() as tx:
        await tx.auth.add_client(client, now=datetime.now(UTC))
    return client
