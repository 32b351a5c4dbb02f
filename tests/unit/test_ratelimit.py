"""The rate limit setting: how an operator turns it off, and that a bad value fails at start."""

from __future__ import annotations

import pytest

from fhir_adapter.config import Settings
from fhir_adapter.errors import TooManyRequestsError
from fhir_adapter.security.ratelimit import RateLimiter


async def test_off_from_the_environment_means_no_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty variable means "use the default" to the settings, so "off" is how to say it.
    monkeypatch.setenv("FHIR_ADAPTER_RATE_LIMIT", "")
    assert Settings(_env_file=None).rate_limit == "3000/minute"
    monkeypatch.setenv("FHIR_ADAPTER_RATE_LIMIT", "off")
    limiter = RateLimiter(Settings(_env_file=None).rate_limit)
    for _ in range(5000):
        await limiter.check("client:busy")


async def test_a_limit_counts_per_key() -> None:
    limiter = RateLimiter("3/minute")
    for _ in range(3):
        await limiter.check("client:a")
    with pytest.raises(TooManyRequestsError) as refused:
        await limiter.check("client:a")
    assert 1 <= refused.value.retry_after <= 60
    await limiter.check("client:b")


def test_a_limit_the_library_cannot_read_fails_at_start() -> None:
    with pytest.raises(ValueError):
        RateLimiter("lots")
