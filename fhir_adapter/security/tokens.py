"""Verifying bearer access tokens: JWTs signed by the configured issuer (PyJWT).

Only asymmetric algorithms are accepted, so neither `alg: none` nor an HMAC "signed" with the
issuer's public key can pass. Keys come from a JWKS (file, URL, or the built-in issuer's own);
a token naming a key we do not know makes us fetch the JWKS again, at most once per
`refresh_seconds`, so the issuer can rotate keys without a restart.

Each token's signature is checked once (issue #18): an accepted token's checked Access is kept,
keyed by the SHA-256 of its bytes, until its `exp` and never longer. A refused token is never
kept, and a token whose bytes differ in any way has another digest, so the cache can only
answer for a token that passed every check. A cached token's client is still asked for at every
use (`registered`, itself cached per client for `auth_client_check_seconds`), so `clients
remove` in any process refuses it within that bound.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx
import jwt
from cachetools import LRUCache
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_adapter.access.scopes import Access, parse_scopes
from fhir_adapter.errors import AuthenticationError

# Tokens the token endpoint issues carry it: on use, their client must still be registered.
REGISTERED_CLAIM = "https://fhir-adapter.org/registered-client"

log = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "ES256", "ES384")
_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}


def key_fits(key: jwt.PyJWK, algorithm: str) -> bool:
    """Whether a JWT header's `alg` is one this (public) key can verify: RS* needs an RSA key,
    ES* an EC key on that algorithm's curve. PyJWT raises TypeError, not a PyJWTError, for an RS
    header over an EC key, so a mismatch must be refused before it gets there (else a 500)."""
    public = key.key
    if algorithm.startswith(("RS", "PS")):
        return isinstance(public, rsa.RSAPublicKey)
    if algorithm.startswith("ES"):
        return isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == _CURVES.get(
            algorithm
        )
    return False


class KeySource(Protocol):
    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The verification key with this `kid` (or the only key, when no kid is given)."""
        ...


def _pick(keys: dict[str, jwt.PyJWK], kid: str | None) -> jwt.PyJWK | None:
    if kid is not None:
        return keys.get(kid)
    return next(iter(keys.values())) if len(keys) == 1 else None


_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def has_private_members(jwk: dict[str, Any]) -> bool:
    """Whether a JWK carries private (or symmetric, `k`) key material (RFC 7518 §6)."""
    return any(member in jwk for member in _PRIVATE_MEMBERS)


def parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """The usable signature keys of a JWKS document, by kid."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS must be a JSON object with a 'keys' array")
    keys: dict[str, jwt.PyJWK] = {}
    for index, raw in enumerate(document["keys"]):
        if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
            continue
        if has_private_members(raw):  # verification needs the public half only
            log.warning("JWKS key %d holds private key material; skipped", index)
            continue
        try:
            key = jwt.PyJWK.from_dict(raw)
        except jwt.PyJWTError:
            log.warning("JWKS key %d is not usable; skipped", index)
            continue
        keys[str(raw.get("kid") or index)] = key
    return keys


class StaticKeys:
    """Keys known up front: a JWKS file, or the built-in issuer's own key."""

    def __init__(self, document: Any) -> None:
        self.keys = parse_jwks(document)

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        return _pick(self.keys, kid)


class RemoteKeys:
    """An issuer's `jwks_uri`, fetched over HTTP and fetched again for a kid we do not know."""

    def __init__(self, http: httpx.AsyncClient, url: str, *, refresh_seconds: float = 60.0) -> None:
        self.http = http
        self.url = url
        self.refresh_seconds = refresh_seconds
        self.keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        found = _pick(self.keys, kid)
        if found is not None:
            return found
        async with self._lock:
            recently = (
                self._fetched_at is not None
                and time.monotonic() - self._fetched_at < self.refresh_seconds
            )
            if not recently:
                await self._fetch()
        return _pick(self.keys, kid)

    async def _fetch(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            response = await self.http.get(self.url, headers={"Accept": "application/json"})
            response.raise_for_status()
            self.keys = parse_jwks(response.json())
            log.info("fetched %d signing keys from the issuer's JWKS", len(self.keys))
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("the issuer's JWKS could not be fetched (%s)", type(exc).__name__)


class TokenVerifier:
    """Turns a bearer token into the caller's Access, or a 401."""

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str,
        leeway_seconds: float = 30.0,
        registered: Callable[[str], Awaitable[bool]] | None = None,
        cache_size: int = 10_000,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.registered = registered  # the built-in issuer's client registry (issue #16)
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway_seconds
        self.now = now
        # sha256(token) -> (exp, Access): tokens that passed every check, until their exp
        self._verified: LRUCache[bytes, tuple[float, Access]] = LRUCache(maxsize=cache_size)

    async def verify(self, token: str) -> Access:
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._verified.get(digest)
        if cached is not None and self.now() < cached[0]:
            access = cached[1]
        else:
            if cached is not None:
                self._verified.pop(digest, None)
            access, expires = await self._check(token)
            if self.now() < expires:
                self._verified[digest] = (expires, access)
        if (
            access.registered
            and self.registered is not None
            and not await self.registered(access.client_id)
        ):
            self._verified.pop(digest, None)
            raise AuthenticationError("The access token's client is no longer registered")
        return access

    async def _check(self, token: str) -> tuple[Access, float]:
        """The Access a token grants and its `exp`, after checking its signature and claims."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError("The access token is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            raise AuthenticationError(
                f"Access tokens must be signed with one of {', '.join(ASYMMETRIC_ALGORITHMS)}"
            )
        kid = header.get("kid")
        key = await self.keys.key(kid if isinstance(kid, str) else None)
        if key is None:
            raise AuthenticationError(
                "The access token is signed with a key the issuer does not list"
            )
        if not key_fits(key, algorithm):
            raise AuthenticationError(
                "The access token's signature or claims are invalid (alg does not fit the key)"
            )
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("The access token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationError("The access token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError(
                "The access token is not meant for this server (aud)"
            ) from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError(
                "The access token comes from an unknown issuer (iss)"
            ) from None
        except jwt.PyJWTError:
            raise AuthenticationError(
                "The access token's signature or claims are invalid"
            ) from None
        expires = float(claims["exp"])
        if expires + self.leeway <= self.now():  # PyJWT reads the wall clock; so do we, once
            raise AuthenticationError("The access token has expired")
        return access_from_claims(claims), expires


def access_from_claims(claims: dict[str, Any]) -> Access:
    scope = claims.get("scope", "")
    if isinstance(scope, list):  # some issuers send `scp` style arrays
        scope = " ".join(str(s) for s in scope)
    patient = claims.get("patient")
    client_id = claims.get("client_id") or claims.get("azp") or claims.get("sub") or "unknown"
    return Access(
        client_id=str(client_id)[:64],
        grants=parse_scopes(str(scope)),
        patient=str(patient) if isinstance(patient, str) and patient else None,
        registered=claims.get(REGISTERED_CLAIM) is True,
    )
