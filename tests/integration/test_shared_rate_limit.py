"""Issue #13: rate limits shared across processes through Redis (FHIR_ADAPTER_REDIS_URL).

Two RateLimiter instances stand for two server processes. The Redis tests run when
FHIR_ADAPTER_TEST_REDIS_URL is set (CI sets it to the machine's Redis) and fail, not skip, when
that Redis does not answer. Keys are unique per test, so a shared Redis is fine."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from fhir_adapter import telemetry
from fhir_adapter.errors import TooManyRequestsError
from fhir_adapter.security.ratelimit import RateLimiter

REDIS_URL = os.environ.get("FHIR_ADAPTER_TEST_REDIS_URL")


@pytest.fixture
def redis_url() -> str:
    if not REDIS_URL:
        pytest.skip("FHIR_ADAPTER_TEST_REDIS_URL is not set")
    return REDIS_URL


@pytest.fixture
async def two_processes(redis_url: str) -> AsyncIterator[tuple[RateLimiter, RateLimiter]]:
    first = RateLimiter("10/minute", redis_url=redis_url)
    second = RateLimiter("10/minute", redis_url=redis_url)
    yield first, second
    await first.aclose()
    await second.aclose()


async def allowed(limiter: RateLimiter, key: str, times: int) -> int:
    count = 0
    for _ in range(times):
        try:
            await limiter.check(key)
        except TooManyRequestsError as refused:
            assert refused.headers()["Retry-After"].isdigit()
        else:
            count += 1
    return count


async def test_two_limiters_sharing_redis_enforce_one_limit(
    two_processes: tuple[RateLimiter, RateLimiter],
) -> None:
    first, second = two_processes
    key = f"client:{uuid.uuid4().hex}"
    errors = telemetry.RATE_LIMIT_STORE_ERRORS._value.get()
    assert await allowed(first, key, 6) == 6
    assert await allowed(second, key, 6) == 4  # the same window: 10 in all, not 10 each
    assert await allowed(first, key, 3) == 0
    assert telemetry.RATE_LIMIT_STORE_ERRORS._value.get() == errors  # Redis answered each time
    # Another client's window is its own.
    assert await allowed(second, f"client:{uuid.uuid4().hex}", 2) == 2


async def test_costs_count_against_the_shared_window(
    two_processes: tuple[RateLimiter, RateLimiter],
) -> None:
    first, second = two_processes
    key = f"client:{uuid.uuid4().hex}"
    await first.check(key, cost=9)  # a batch of nine entries in one process
    assert await allowed(second, key, 3) == 1


async def test_without_redis_each_process_counts_on_its_own() -> None:
    first, second = RateLimiter("3/minute"), RateLimiter("3/minute")
    assert await allowed(first, "client:a", 5) == 3
    assert await allowed(second, "client:a", 5) == 3


async def test_an_unreachable_redis_falls_back_to_this_process_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = RateLimiter("3/minute", redis_url="redis://127.0.0.1:1/0")
    errors = telemetry.RATE_LIMIT_STORE_ERRORS._value.get()
    caplog.set_level(logging.WARNING, logger="fhir_adapter.security.ratelimit")
    try:
        assert await allowed(limiter, "client:b", 5) == 3  # still limited, per process
    finally:
        await limiter.aclose()
    assert telemetry.RATE_LIMIT_STORE_ERRORS._value.get() == errors + 1  # then 5 s on its own
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "rate limits: Redis did not answer (ConnectionError); counting in this process for now"
    ]
