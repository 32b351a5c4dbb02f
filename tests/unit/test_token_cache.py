"""Issue #18: each bearer token's signature is checked once, then its checked Access is reused
until the token's `exp`, never longer; refused or altered tokens are never answered from it."""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt
import orjson
import pytest
from pydantic import ValidationError

from fhir_adapter.config import Settings
from fhir_adapter.errors import AuthenticationError
from fhir_adapter.security.tokens import StaticKeys, TokenVerifier
from tests.unit.test_tokens import AUDIENCE, ISSUER, Key, jwks


class CountingKeys(StaticKeys):
    """The issuer's keys, counting how often a signature check asks for one."""

    def __init__(self, document: Any) -> None:
        super().__init__(document)
        self.asked = 0

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        self.asked += 1
        return await super().key(kid)


class Clock:
    def __init__(self) -> None:
        self.at = time.time()

    def __call__(self) -> float:
        return self.at


@pytest.fixture
def key() -> Key:
    return Key()


@pytest.fixture
def keys(key: Key) -> CountingKeys:
    return CountingKeys(jwks(key))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def cached_verifier(keys: CountingKeys, clock: Clock, **options: Any) -> TokenVerifier:
    return TokenVerifier(
        keys, issuer=ISSUER, audience=AUDIENCE, leeway_seconds=0, now=clock, **options
    )


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await verifier.verify(token)
    return str(caught.value)


async def test_a_token_is_checked_once_then_answered_from_the_cache(
    key: Key, keys: CountingKeys, clock: Clock
) -> None:
    tokens = cached_verifier(keys, clock)
    token = key.token(scope="system/Task.rs")
    first = await tokens.verify(token)
    for _ in range(5):
        assert await tokens.verify(token) == first
    assert keys.asked == 1


async def test_a_cached_token_is_refused_once_it_expires(
    key: Key, keys: CountingKeys, clock: Clock
) -> None:
    tokens = cached_verifier(keys, clock)
    token = key.token(exp=int(clock.at) + 60)
    assert await tokens.verify(token)
    clock.at += 59
    assert await tokens.verify(token)
    assert keys.asked == 1
    clock.at += 1  # exactly exp: the cache entry is gone and the full check refuses it
    assert "expired" in await refused(tokens, token)
    assert "expired" in await refused(tokens, token)


async def test_leeway_never_extends_the_cache_past_exp(key: Key, keys: CountingKeys) -> None:
    now = time.time()
    tokens = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE, leeway_seconds=30)
    late = key.token(iat=int(now) - 310, exp=int(now) - 10)  # past exp, within the leeway
    assert await tokens.verify(late)
    assert await tokens.verify(late)
    assert keys.asked == 2  # accepted each time by the full check, never from the cache


def altered(token: str, *, scope: str) -> list[str]:
    """Ways of changing a token's bytes: its signature, its claims, one trailing character."""
    header, payload, signature = token.split(".")
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    claims = orjson.loads(raw) | {"scope": scope}
    forged = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    return [
        f"{header}.{forged}.{signature}",
        f"{header}.{payload}.{flipped}",
        f"{header}.{payload}.{signature}x",
    ]


async def test_a_cached_tokens_altered_bytes_are_refused(
    key: Key, keys: CountingKeys, clock: Clock
) -> None:
    tokens = cached_verifier(keys, clock)
    token = key.token(scope="system/Task.r")
    assert await tokens.verify(token)
    for changed in altered(token, scope="system/*.cruds"):
        await refused(tokens, changed)
        await refused(tokens, changed)  # and again: a refusal is never remembered as a pass
    assert (await tokens.verify(token)).client_id == "payer-um"


async def test_a_refused_token_is_checked_again_each_time(
    key: Key, keys: CountingKeys, clock: Clock
) -> None:
    tokens = cached_verifier(keys, clock)
    early = key.token(nbf=int(clock.at) + 120)
    for _ in range(3):
        assert "not valid yet" in await refused(tokens, early)
    assert keys.asked == 3


async def test_a_cached_tokens_client_is_asked_for_at_every_use(
    keys: CountingKeys, clock: Clock, key: Key
) -> None:
    registered = {"payer-um": True}
    asked: list[str] = []

    async def still_registered(client_id: str) -> bool:
        asked.append(client_id)
        return registered.get(client_id, False)

    tokens = cached_verifier(keys, clock, registered=still_registered)
    token = key.token(**{"https://fhir-adapter.org/registered-client": True})
    assert await tokens.verify(token)
    assert await tokens.verify(token)
    registered["payer-um"] = False
    assert "no longer registered" in await refused(tokens, token)
    registered["payer-um"] = True  # registered again (a new registration has a new id in practice)
    assert await tokens.verify(token)
    assert asked == ["payer-um"] * 4 and keys.asked == 2


async def test_the_cache_is_bounded(key: Key, keys: CountingKeys, clock: Clock) -> None:
    tokens = cached_verifier(keys, clock, cache_size=3)
    issued = [key.token(jti=str(n)) for n in range(5)]
    for token in issued:
        assert await tokens.verify(token)
    assert len(tokens._verified) == 3
    assert await tokens.verify(issued[0])  # fell out: checked again, and still accepted
    assert keys.asked == 6


def test_the_revocation_bound_cannot_be_set_past_30_seconds() -> None:
    assert Settings(auth_client_check_seconds=30).auth_client_check_seconds == 30
    with pytest.raises(ValidationError, match="auth_client_check_seconds"):
        Settings(auth_client_check_seconds=31)
